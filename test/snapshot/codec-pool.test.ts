import { execFile } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { deflateSync } from "fflate";
import { deflateRawSync } from "node:zlib";
import { afterAll, expect, it } from "vitest";
import { ResourceLimitError } from "../../lib/errors.js";
import { createCodecPool } from "../../lib/snapshot/codec-pool.js";
import { InflateError, inflateSection, THREAD_INFLATE_STEP } from "../../lib/snapshot/codec.js";
import { bundleForNode } from "../../scripts/build.mjs";

// The codec pool (lib/snapshot/codec-pool.ts): fflate on worker threads, the same bytes
// as fflate on the main thread, inflates that fail as they do there (a bomb within one
// step), and threads that never keep a process alive once idle.

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

it("inflates on its threads to exactly inflateSection's bytes; wrong data is InflateError with inflateSection's words", async () => {
  const sections = Array.from({ length: 6 }, (_, i) => textOf(i + 3, 150_000 + i * 20_000));
  const stored = sections.map((s, i) => (i % 2 ? deflateSync(s, { level: 2 }) : deflateRawSync(s, { level: 6 })));
  const outs = await Promise.all(stored.map((s, i) => pool.inflate(s, sections[i]!.byteLength, THREAD_INFLATE_STEP)));
  outs.forEach((out, i) => expect(Buffer.from(out).equals(Buffer.from(sections[i]!))).toBe(true));
  const words = (f: () => unknown) => {
    try {
      f();
    } catch (err) {
      return (err as Error).message;
    }
    return "inflated";
  };
  const size = sections[0]!.byteLength;
  for (const [bytes, claim] of [
    [stored[0]!, size + 1],
    [stored[0]!, size - 1],
    [stored[0]!.subarray(0, stored[0]!.byteLength >> 1), size],
    [new Uint8Array(5000).fill(0xff), size],
  ] as const) {
    const refusal = await pool.inflate(bytes, claim, THREAD_INFLATE_STEP).then(() => null, (err: unknown) => err);
    expect(refusal).toBeInstanceOf(InflateError);
    expect((refusal as Error).message).toBe(words(() => inflateSection(bytes, claim)));
  }
});

it("a bomb on a thread is refused in its first input step (THREAD_INFLATE_STEP), whatever size it claims", async () => {
  const bomb = deflateRawSync(new Uint8Array(72 * 1024 * 1024), { level: 9 }); // ~72 KB that inflate to 72 MiB: more than one step
  expect(bomb.byteLength).toBeGreaterThan(THREAD_INFLATE_STEP);
  for (const claim of [100_000, 8 * 1024 * 1024]) {
    const before = pool.inflateSteps;
    await expect(pool.inflate(bomb, claim, THREAD_INFLATE_STEP)).rejects.toThrow(new InflateError(`inflates to more than the ${claim} bytes claimed`));
    expect(pool.inflateSteps - before, String(claim)).toBe(1);
  }
});

it("a thread's failed allocation is ResourceLimitError, not corruption", async () => {
  const stored = deflateSync(textOf(3, 80_000));
  // A typed array longer than V8 allows: the thread's allocation throws RangeError.
  await expect(pool.inflate(stored, 2 ** 53, THREAD_INFLATE_STEP)).rejects.toBeInstanceOf(ResourceLimitError);
});

it("an inflate copies its input unless handed over: a Node Buffer's bytes stay (slice() would be a view), a whole handed-over buffer moves", async () => {
  const text = textOf(7, 120_000);
  const file = Buffer.concat([Buffer.from("header"), Buffer.from(deflateSync(text))]);
  const section = file.subarray(6);
  expect(Buffer.from(await pool.inflate(section, text.byteLength, THREAD_INFLATE_STEP, true)).equals(Buffer.from(text))).toBe(true);
  expect(file.byteLength).toBe(6 + section.byteLength); // a view on part of its buffer: copied, even handed over
  const own = deflateSync(text);
  expect(Buffer.from(await pool.inflate(own, text.byteLength, THREAD_INFLATE_STEP)).equals(Buffer.from(text))).toBe(true);
  expect(own.byteLength).toBeGreaterThan(0);
  await pool.inflate(own, text.byteLength, THREAD_INFLATE_STEP, true);
  expect(own.byteLength).toBe(0);
});

it("a thread that dies fails its task with an error, and the pool starts another for the next", async () => {
  const broken = createCodecPool(1)!;
  try {
    await broken.deflate(textOf(3, 64_000), 2);
    expect(broken.threads).toBe(1);
    // ~6 MB at level 9: the thread is still deflating when close() ends it (64 KB once finished first).
    const dying = broken.deflate(textOf(3, 6_000_000), 9);
    await broken.close(); // ends the thread under the task
    await expect(dying).rejects.toThrow(/exited/);
    expect(Buffer.from(await broken.deflate(textOf(4, 64_000), 2)).equals(Buffer.from(deflateSync(textOf(4, 64_000), { level: 2 })))).toBe(true);
  } finally {
    await broken.close();
  }
});

/** An entry that compresses through the codec (the pool) and prints its size, run from an esbuild bundle like dist/server.mjs. */
const ENTRY = `
import { deflateSection, inflateSectionAsync } from "../../lib/snapshot/codec.js";
import { createCodecPool } from "../../lib/snapshot/codec-pool.js";
const text = new TextEncoder().encode("chroma backup ".repeat(40_000));
const probe = createCodecPool(1);
// Nothing but the pending compression keeps the process alive here: the thread is ref'd while it works.
const out = await deflateSection(text, { level: 2 });
await probe.deflate(text, 2);
// The thread's inflate loop is inflateInSteps's source text: it must survive bundling.
const back = await inflateSectionAsync(out, text.byteLength);
const same = back.every((b, i) => b === text[i]);
console.log(JSON.stringify({ bytes: out.byteLength, threads: probe.threads, same }));
// No close(): idle threads are unref'd, so the process ends on its own.
`;

it("deflates and inflates from an esbuild bundle (the way npm start runs), and a process using it ends by itself without closing it", async () => {
  const dir = join(ROOT, "dist", `test-codec-pool-${process.pid}`);
  await mkdir(join(dir, "src"), { recursive: true });
  try {
    // The entry sits two levels under the root (as test/x/ does), so its imports resolve; the bundle goes in dist/ (packages external: fflate from node_modules).
    const entry = join(dir, "src", "entry.ts");
    await writeFile(entry, ENTRY.replaceAll("../../lib/", `${join(ROOT, "lib")}/`));
    const { entries } = await bundleForNode({ entry: relative(ROOT, entry) }, relative(ROOT, join(dir, "out")));
    const { stdout } = await promisify(execFile)(process.execPath, [entries[0]!], { timeout: 30_000 });
    expect(JSON.parse(stdout)).toEqual({ bytes: deflateSync(new TextEncoder().encode("chroma backup ".repeat(40_000)), { level: 2 }).byteLength, threads: 1, same: true });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 60_000);
