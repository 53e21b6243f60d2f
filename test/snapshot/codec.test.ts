import fc from "fast-check";
import { deflateSync } from "fflate";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { toApiError } from "../../handlers/errors.js";
import { ResourceLimitError } from "../../lib/errors.js";
import { deflateSection, INFLATE_STEP, InflateError, inflateSection, inflateSectionAsync, inflateStepsHere, inflateStepsTaken, THREAD_INFLATE_STEP } from "../../lib/snapshot/codec.js";

// The section codec (lib/snapshot/codec.ts): fflate on every runtime. What it writes is
// standard raw deflate (node:zlib, the deflater before issue 14, is the oracle); what
// node:zlib wrote (chunks of format 2 before issue 14) inflates to the same bytes; a
// truncated, oversized or bomb section is refused as InflateError, a bomb within one step.

/** Section bytes like the writer's: text with repeats (compresses), random bytes (does not), or a mix; sizes cross the input step. */
const section = fc.oneof(
  fc.tuple(fc.array(fc.constantFrom("chroma ", "vector ", '{"i":1}', "é😀", "\n", "café ", "日本語"), { maxLength: 8000 }), fc.integer()).map(([words, seed]) => new TextEncoder().encode(words.join("") + String(seed))),
  fc.uint8Array({ maxLength: 60_000 }),
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 2000 }), fc.integer({ min: 1, max: 80 })).map(([bytes, times]) => {
    const out = new Uint8Array(bytes.byteLength * times);
    for (let i = 0; i < times; i++) out.set(bytes, i * bytes.byteLength);
    return out;
  }),
);

/** The deflaters chunks have been written with: node:zlib at the writer's levels and strategy (before issue 14), fflate at today's. */
const writers: [string, (b: Uint8Array) => Uint8Array][] = [
  ["node:zlib level 2 memLevel 9 (text, before issue 14)", (b) => deflateRawSync(b, { level: 2, memLevel: 9 })],
  ["node:zlib level 6", (b) => deflateRawSync(b, { level: 6, memLevel: 9 })],
  ["node:zlib Huffman only (the high-byte plane before issue 14)", (b) => deflateRawSync(b, { strategy: constants.Z_HUFFMAN_ONLY })],
  ["node:zlib level 9", (b) => deflateRawSync(b, { level: 9 })],
  ["fflate level 1 (the high-byte plane)", (b) => deflateSync(b, { level: 1 })],
  ["fflate level 2 (text)", (b) => deflateSync(b, { level: 2 })],
  ["fflate level 6", (b) => deflateSync(b, { level: 6 })],
];

it("no node:zlib on the snapshot path: no module of lib/ imports it (fflate in Node too)", async () => {
  const root = fileURLToPath(new URL("../../lib/", import.meta.url));
  const sources = (await readdir(root, { recursive: true })).filter((f) => f.endsWith(".ts"));
  expect(sources.length).toBeGreaterThan(20);
  const importing: string[] = [];
  for (const f of sources) if (/["'](?:node:)?zlib["']/.test(await readFile(join(root, f), "utf8"))) importing.push(f);
  expect(importing).toEqual([]);
});

it("deflateSection's output (fflate, on the pool or inline, at every level) is standard raw deflate: node:zlib inflates it to the same bytes, and so does inflateSection", async () => {
  await fc.assert(
    fc.asyncProperty(section, fc.integer({ min: 0, max: 9 }), fc.boolean(), async (bytes, level, huffmanOnly) => {
      const stored = await deflateSection(bytes, { level, huffmanOnly });
      expect(Buffer.from(inflateRawSync(stored)).equals(Buffer.from(bytes))).toBe(true);
      expect(Buffer.from(inflateSection(stored, bytes.byteLength)).equals(Buffer.from(bytes))).toBe(true);
    }),
    { numRuns: 150 },
  );
});

it("a section deflated by node:zlib (chunks written before issue 14) or fflate, at every level the writers used, inflates to the same bytes", () => {
  fc.assert(
    fc.property(section, fc.constantFrom(...writers), (bytes, [, deflate]) => {
      const out = inflateSection(deflate(bytes), bytes.byteLength);
      expect(Buffer.from(out).equals(Buffer.from(bytes))).toBe(true);
    }),
    { numRuns: 300 },
  );
});

it("a truncated section, or one claiming a size it does not have, is refused as InflateError", () => {
  fc.assert(
    fc.property(section.filter((b) => b.byteLength > 0), fc.constantFrom(...writers), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), fc.integer({ min: 1, max: 5000 }), (bytes, [, deflate], cut, off) => {
      const stored = deflate(bytes);
      expect(() => inflateSection(stored.subarray(0, Math.floor(stored.byteLength * cut)), bytes.byteLength)).toThrow(InflateError);
      expect(() => inflateSection(stored, bytes.byteLength + off)).toThrow(/fewer than/);
      expect(() => inflateSection(stored, Math.max(0, bytes.byteLength - off))).toThrow(/more than/);
    }),
    { numRuns: 200 },
  );
});

it("arbitrary bytes are either a deflate stream of exactly the claimed size or refused as InflateError, never another error", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 3000 }), fc.integer({ min: 0, max: 100_000 }), (bytes, size) => {
      try {
        expect(inflateSection(bytes, size).byteLength).toBe(size);
      } catch (err) {
        expect(err).toBeInstanceOf(InflateError);
      }
    }),
    { numRuns: 500 },
  );
});

it("a deflate bomb is refused in the first input step, whichever deflater made it: one step fed, one step's input read", () => {
  const zeros = new Uint8Array(34 * 1024 * 1024); // 34 MiB of zeros: ~35 KB deflated, ~1000:1
  for (const [name, bomb] of [
    ["node:zlib level 9", deflateRawSync(zeros, { level: 9 })],
    ["fflate level 1", deflateSync(zeros, { level: 1 })],
  ] as const) {
    expect(bomb.byteLength, name).toBeGreaterThan(2 * INFLATE_STEP); // more than two input steps
    for (const claim of [0, 1_000_000]) {
      const steps: [number, number][] = [];
      const before = inflateStepsTaken();
      expect(() => inflateSection(bomb, claim, (input, output) => steps.push([input, output])), `${name}, claiming ${claim}`).toThrow(/more than/);
      expect(inflateStepsTaken() - before, `${name}, claiming ${claim}`).toBe(1);
      // One step: INFLATE_STEP bytes of input read, its output (at most ~1032x) counted, the rest never inflated.
      expect(steps.length).toBe(1);
      expect(steps[0]![0]).toBe(INFLATE_STEP);
      expect(steps[0]![1]).toBeGreaterThan(claim);
      expect(steps[0]![1]).toBeLessThanOrEqual(1032 * INFLATE_STEP + 32 * 1024);
    }
    if (name !== "fflate level 1") continue;
    // The honest claim inflates it all, step by step: the refusal above is the claim's doing.
    const before = inflateStepsTaken();
    expect(inflateSection(bomb, zeros.byteLength).byteLength).toBe(zeros.byteLength);
    expect(inflateStepsTaken() - before).toBe(Math.ceil(bomb.byteLength / INFLATE_STEP));
  }
});

/** What an inflate answers, as comparable data: the bytes (base64) or the error's class and words. */
async function outcome(f: () => Promise<Uint8Array> | Uint8Array): Promise<string> {
  try {
    return Buffer.from(await f()).toString("base64");
  } catch (err) {
    return `${(err as Error).constructor.name}: ${(err as Error).message}`;
  }
}

it("inflateSectionAsync (in Node on the pool from 64 KiB claimed, inline below) answers what inflateSection does: the same bytes, or the same error in the same words", async () => {
  const big = fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 500 }), fc.integer({ min: 100, max: 600 })).map(([bytes, times]) => {
    const out = new Uint8Array(bytes.byteLength * times);
    for (let i = 0; i < times; i++) out.set(bytes, i * bytes.byteLength);
    return out;
  });
  await fc.assert(
    fc.asyncProperty(fc.oneof(section, big), fc.constantFrom(...writers), fc.integer({ min: -3, max: 3 }), fc.constantFrom(1, 0.5, 0.99), async (bytes, [, deflate], off, cut) => {
      const stored = deflate(bytes);
      const given = stored.subarray(0, Math.floor(stored.byteLength * cut));
      const size = Math.max(0, bytes.byteLength + off);
      expect(await outcome(() => inflateSectionAsync(given, size))).toBe(await outcome(() => inflateSection(given, size)));
    }),
    { numRuns: 120 },
  );
});

it("a bomb through inflateSectionAsync is refused within one step too, on the pool (a large claim) or inline (a small one)", async () => {
  const bomb = deflateRawSync(new Uint8Array(72 * 1024 * 1024), { level: 9 }); // ~72 KB: more than one step of either size
  expect(bomb.byteLength).toBeGreaterThan(THREAD_INFLATE_STEP);
  for (const claim of [1000, 1_000_000]) {
    const before = inflateStepsTaken();
    await expect(inflateSectionAsync(bomb, claim)).rejects.toThrow(new InflateError(`inflates to more than the ${claim} bytes claimed`));
    expect(inflateStepsTaken() - before, String(claim)).toBe(1);
  }
});

it("helpWhenBusy: with the pool backlogged, sections inflate on the calling thread too, with the same answers; without it, all on the pool", async () => {
  const sections = Array.from({ length: 12 }, (_, i) => new TextEncoder().encode(`section ${i} `.repeat(20_000 + i * 100)));
  const stored = sections.map((s) => deflateSync(s, { level: 2 }));
  for (const helpWhenBusy of [false, true]) {
    const here = inflateStepsHere();
    const out = await Promise.all(stored.map((s, i) => inflateSectionAsync(s, sections[i]!.byteLength, { helpWhenBusy })));
    out.forEach((bytes, i) => expect(Buffer.from(bytes).equals(Buffer.from(sections[i]!))).toBe(true));
    if (helpWhenBusy) expect(inflateStepsHere() - here).toBeGreaterThan(0);
    else expect(inflateStepsHere() - here).toBe(0);
  }
});

it("a resource limit is 503 resource_limit, not 422 snapshot_corrupt", () => {
  const e = toApiError(new ResourceLimitError("inflate ran out of a resource (not a fault in the data): Memory limit exceeded"));
  expect(e.status).toBe(503);
  expect(e.code).toBe("resource_limit");
  expect(e.message).toMatch(/not known to be damaged/);
});
