import fc from "fast-check";
import { deflateSync } from "fflate";
import { constants, deflateRawSync } from "node:zlib";
import { expect, it } from "vitest";
import { toApiError } from "../../handlers/errors.js";
import { ResourceLimitError } from "../../lib/errors.js";
import { deflateCodec, deflateSection, InflateError, inflateSection, inflateStreaming } from "../../lib/snapshot/codec.js";

// The chunk codec (lib/snapshot/codec.ts): whatever wrote a section, node:zlib (chunks
// written by Node since format 2) or fflate (chunks written by a Worker), the fflate
// inflater gives back the same bytes, and refuses truncated, oversized and bomb input.

/** Section bytes like the writer's: text with repeats (compresses), random bytes (does not), or a mix; sizes cross the 8 KiB input step. */
const section = fc.oneof(
  fc.tuple(fc.array(fc.constantFrom("chroma ", "vector ", '{"i":1}', "é😀", "\n", "café ", "日本語"), { maxLength: 6000 }), fc.integer()).map(([words, seed]) => new TextEncoder().encode(words.join("") + String(seed))),
  fc.uint8Array({ maxLength: 40_000 }),
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 2000 }), fc.integer({ min: 1, max: 60 })).map(([bytes, times]) => {
    const out = new Uint8Array(bytes.byteLength * times);
    for (let i = 0; i < times; i++) out.set(bytes, i * bytes.byteLength);
    return out;
  }),
);

/** The deflaters chunks have been written with: node:zlib at the writer's levels and strategy, fflate at the Worker's. */
const writers: [string, (b: Uint8Array) => Uint8Array][] = [
  ["node:zlib level 2 memLevel 9 (text, the default)", (b) => deflateRawSync(b, { level: 2, memLevel: 9 })],
  ["node:zlib level 6 (text, encodeChunk's default)", (b) => deflateRawSync(b, { level: 6, memLevel: 9 })],
  ["node:zlib Huffman only (the high-byte plane)", (b) => deflateRawSync(b, { strategy: constants.Z_HUFFMAN_ONLY })],
  ["node:zlib level 9", (b) => deflateRawSync(b, { level: 9 })],
  ["fflate level 1 (the Worker's plane)", (b) => deflateSync(b, { level: 1 })],
  ["fflate level 2 (the Worker's text)", (b) => deflateSync(b, { level: 2 })],
  ["fflate level 6", (b) => deflateSync(b, { level: 6 })],
];

// Both inflaters: Node's (node:zlib with maxOutputLength) and the Worker's (fflate, streamed).
for (const [inflaterName, inflate] of [
  ["inflateSection (node:zlib in Node)", inflateSection],
  ["inflateStreaming (fflate, the Worker's)", inflateStreaming],
] as const) {
  it(`${inflaterName}: a section deflated by node:zlib or fflate, at every level the writers use, inflates to the same bytes`, () => {
    fc.assert(
      fc.property(section, fc.constantFrom(...writers), (bytes, [, deflate]) => {
        const out = inflate(deflate(bytes), bytes.byteLength);
        expect(Buffer.from(out).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it(`${inflaterName}: deflateSection (this runtime's writer: node:zlib in Node) round-trips`, async () => {
    expect(deflateCodec).toBe("node:zlib");
    await fc.assert(
      fc.asyncProperty(section, fc.boolean(), async (bytes, huffmanOnly) => {
        const stored = await deflateSection(bytes, { level: 2, huffmanOnly });
        expect(Buffer.from(inflate(stored, bytes.byteLength)).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it(`${inflaterName}: a truncated section, or one claiming a size it does not have, is refused as InflateError`, () => {
    fc.assert(
      fc.property(section.filter((b) => b.byteLength > 0), fc.constantFrom(...writers), fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), fc.integer({ min: 1, max: 5000 }), (bytes, [, deflate], cut, off) => {
        const stored = deflate(bytes);
        expect(() => inflate(stored.subarray(0, Math.floor(stored.byteLength * cut)), bytes.byteLength)).toThrow(InflateError);
        expect(() => inflate(stored, bytes.byteLength + off)).toThrow(/fewer than/);
        expect(() => inflate(stored, Math.max(0, bytes.byteLength - off))).toThrow(/more than/);
      }),
      { numRuns: 200 },
    );
  });

  it(`${inflaterName}: arbitrary bytes are either a deflate stream of exactly the claimed size or refused as InflateError, never another error`, () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.integer({ min: 0, max: 100_000 }), (bytes, size) => {
        try {
          expect(inflate(bytes, size).byteLength).toBe(size);
        } catch (err) {
          expect(err).toBeInstanceOf(InflateError);
        }
      }),
      { numRuns: 500 },
    );
  });
}

/** Records how far into its input inflateSection reads (it slices its input once per step). */
class WatchedInput extends Uint8Array {
  steps = 0;
  furthest = 0;
  override subarray(begin?: number, end?: number): Uint8Array<ArrayBuffer> {
    this.steps++;
    this.furthest = Math.max(this.furthest, end ?? this.byteLength);
    return new Uint8Array(this.buffer, this.byteOffset, this.byteLength).subarray(begin, end);
  }
}

it("a deflate bomb is refused within its first input step, whichever deflater made it", () => {
  const zeros = new Uint8Array(20 * 1024 * 1024); // 20 MiB of zeros: ~20 KB deflated, ~1000:1
  for (const [name, bomb] of [
    ["node:zlib level 9", deflateRawSync(zeros, { level: 9 })],
    ["fflate level 9", deflateSync(zeros, { level: 9 })],
  ] as const) {
    expect(bomb.byteLength, name).toBeGreaterThan(16 * 1024); // more than one input step
    for (const claim of [0, 100, 1_000_000]) {
      const input = new WatchedInput(bomb.byteLength);
      input.set(bomb);
      expect(() => inflateStreaming(input, claim), `${name}, claiming ${claim}`).toThrow(/more than/);
      // One step read, half the bomb at most: the rest was never inflated.
      expect(input.steps, `${name}, claiming ${claim}`).toBe(1);
      expect(input.furthest, `${name}, claiming ${claim}`).toBeLessThan(bomb.byteLength / 2);
    }
    // Node's inflater (node:zlib with maxOutputLength) refuses it as well.
    for (const claim of [0, 100, 1_000_000]) expect(() => inflateSection(bomb, claim), `${name}, node, claiming ${claim}`).toThrow(/more than/);
    // The honest claim inflates it all: the refusal above is the claim's doing.
    expect(inflateStreaming(bomb, zeros.byteLength).byteLength).toBe(zeros.byteLength);
    expect(inflateSection(bomb, zeros.byteLength).byteLength).toBe(zeros.byteLength);
  }
});

it("a resource limit is 503 resource_limit, not 422 snapshot_corrupt", () => {
  const e = toApiError(new ResourceLimitError("inflate ran out of a resource (not a fault in the data): Memory limit exceeded"));
  expect(e.status).toBe(503);
  expect(e.code).toBe("resource_limit");
  expect(e.message).toMatch(/not known to be damaged/);
});
