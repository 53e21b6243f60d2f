import { execFile } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { deflateSync } from "fflate";
import { afterAll, expect, it } from "vitest";
import { createCodecPool } from "../../lib/snapshot/codec-pool.js";
import { bundleForNode } from "../../scripts/build.mjs";

// The deflate pool (lib/snapshot/deflate-pool.ts): fflate on worker threads, the same bytes
// as fflate on the main thread, and threads that never keep a process alive once idle.

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const pool = createCodecPool(2)!;
afterAll(() => pool.close());

const textOf = (seed: number, size: number) => new TextEncoder().encode(Array.from({ length: size / 8 }, (_, i) => `w${(i * seed) % 977} `).join(""));

it("deflates on its threads to exactly fflate's bytes at that level, many sections at once, on at most its thread count", async () => {
  const sections = Array.from({ length: 8 }, (_, i) => textOf(i + 3, 200_000 + i * 10_000));
  const outs = await Promise.all(sections.map((s, i) => pool.deflate(s, i % 3 === 0 ? 1 : 2)));
  outs.forEach((out, i) => expect(Buffer.from(out).equals(Buffer.from(deflateSync(sections[i]!, { level: i % 3 === 0 ? 1 : 2 })))).toBe(true));
  expect(pool.threads).toBe(2);
});

it("copies its input unless handed over; handed over, the whole buffer moves to the thread (detached here)", async () => {
  const kept = textOf(5, 100_000);
  const copy = kept.slice();
  await pool.deflate(kept, 2);
  expect(Buffer.from(kept).equals(Buffer.from(copy))).toBe(true);
  const given = textOf(5, 100_000);
  const out = await pool.deflate(given, 2, true);
  expect(given.byteLength).toBe(0);
  expect(Buffer.from(out).equals(Buffer.from(deflateSync(copy, { level: 2 })))).toBe(true);
  // A view on part of a buffer is copied even when handed over: the rest of its buffer is not the pool's to take.
  const part = copy.subarray(10);
  await pool.deflate(part, 2, true);
  expect(part.byteLength).toBe(copy.byteLength - 10);
});

it("a thread that dies fails its task with an error, and the pool starts another for the next", async () => {
  const broken = createCodecPool(1)!;
  try {
    await broken.deflate(textOf(3, 64_000), 2);
    expect(broken.threads).toBe(1);
    const dying = broken.deflate(textOf(3, 64_000), 2);
    await broken.close(); // ends the thread under the task
    await expect(dying).rejects.toThrow(/exited/);
    expect(Buffer.from(await broken.deflate(textOf(4, 64_000), 2)).equals(Buffer.from(deflateSync(textOf(4, 64_000), { level: 2 })))).toBe(true);
  } finally {
    await broken.close();
  }
});

/** An entry that compresses through the codec (the pool) and prints its size, run from an esbuild bundle like dist/server.mjs. */
const ENTRY = `
import { deflateSection } from "../../lib/snapshot/codec.js";
import { createCodecPool } from "../../lib/snapshot/codec-pool.js";
const text = new TextEncoder().encode("chroma backup ".repeat(40_000));
const probe = createCodecPool(1);
// Nothing but the pending compression keeps the process alive here: the thread is ref'd while it works.
const out = await deflateSection(text, { level: 2 });
await probe.deflate(text, 2);
console.log(JSON.stringify({ bytes: out.byteLength, threads: probe.threads }));
// No close(): idle threads are unref'd, so the process ends on its own.
`;

it("works from an esbuild bundle (the way npm start runs), and a process using it ends by itself without closing it", async () => {
  const dir = join(ROOT, "dist", `test-codec-pool-${process.pid}`);
  await mkdir(join(dir, "src"), { recursive: true });
  try {
    // The entry sits two levels under the root (as test/x/ does), so its imports resolve; the bundle goes in dist/ (packages external: fflate from node_modules).
    const entry = join(dir, "src", "entry.ts");
    await writeFile(entry, ENTRY.replaceAll("../../lib/", `${join(ROOT, "lib")}/`));
    const { entries } = await bundleForNode({ entry: relative(ROOT, entry) }, relative(ROOT, join(dir, "out")));
    const { stdout } = await promisify(execFile)(process.execPath, [entries[0]!], { timeout: 30_000 });
    expect(JSON.parse(stdout)).toEqual({ bytes: deflateSync(new TextEncoder().encode("chroma backup ".repeat(40_000)), { level: 2 }).byteLength, threads: 1 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 60_000);
