import fc from "fast-check";
import { expect, it } from "vitest";
import { inflateRawSync } from "node:zlib";
import { checkChunk, chunkSections, decodeChunk, encodeChunk } from "../../lib/snapshot/chunk.js";
import type { RecordBatch } from "../../lib/snapshot/records.js";
import { JsonColumn } from "../../lib/json/json-column.js";

function batchOf(words: Uint32Array, n: number, dim: number): RecordBatch {
  return {
    ids: Array.from({ length: n }, (_, i) => `id-${i}`),
    dim,
    embeddings: new Float32Array(words.buffer, words.byteOffset, n * dim),
    documents: JsonColumn.fromValues(Array.from({ length: n }, (_, i) => (i % 2 ? null : `doc ${i}`))),
    uris: Array.from({ length: n }, () => null),
    metadatas: Array.from({ length: n }, (_, i) => `{"i":${i}}`),
  };
}

/** Encodes, decodes from `shift` bytes into a buffer, and checks every bit; returns the embedding codec used. */
async function roundTrip(words: Uint32Array, n: number, dim: number, shift: number): Promise<number> {
  const encoded = await encodeChunk(batchOf(words, n, dim));
  const moved = new Uint8Array(encoded.bytes.byteLength + shift).subarray(shift);
  moved.set(encoded.bytes);
  const expectation = { hash: "x", records: n, decodedBytes: encoded.decodedBytes, collection: "c" };
  const decoded = decodeChunk(moved, expectation);
  expect([...new Uint32Array(decoded.embeddings.buffer, decoded.embeddings.byteOffset, n * dim)]).toEqual([...words]);
  expect(decoded.ids).toEqual(batchOf(words, n, dim).ids);
  expect(await checkChunk(moved, expectation)).toBe(n);
  return new DataView(encoded.bytes.buffer).getUint32(12, true);
}

it("unit-scale embeddings are stored as byte planes and round-trip bit for bit, at any dimension and count, from any byte offset", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 40, max: 70 }), fc.integer({ min: 0, max: 3 }), fc.integer(), async (dim, n, shift, seed) => {
      const floats = Float32Array.from({ length: n * dim }, (_, i) => Math.sin(seed + i * 7.1) * 0.2);
      expect(await roundTrip(new Uint32Array(floats.buffer), n, dim, shift)).toBe(1);
    }),
    { numRuns: 100 },
  );
});

it("any 32-bit patterns (NaN payloads, -0, huge exponents) round-trip bit for bit, whichever codec pays", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 3 }), async (dim, n, shift) => {
      const words = Uint32Array.from(fc.sample(fc.integer({ min: 0, max: 0xffffffff }), n * dim + 1).slice(0, n * dim));
      expect([0, 1]).toContain(await roundTrip(words, n, dim, shift));
    }),
    { numRuns: 100 },
  );
});

it("the text section is the format's lines, byte for byte, whatever the documents hold (so chunks stay content-addressed across versions)", async () => {
  const text = fc.oneof(fc.string({ unit: "binary" }), fc.constantFrom("", "a\nb", '"q" \\ /', "é😀\u2028", "\u0000\u001f"));
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.string({ minLength: 1 }), fc.option(text), fc.option(text)), { minLength: 1, maxLength: 8 }), async (records) => {
      const ids = records.map(([id], i) => `${i}:${id}`);
      const documents = records.map(([, d]) => d);
      const uris = records.map(([, , u]) => u);
      const metadatas = records.map((_, i) => (i % 2 ? "null" : `{"i":${i}}`));
      const batch: RecordBatch = { ids, dim: 0, embeddings: new Float32Array(0), documents: JsonColumn.fromValues(documents), uris, metadatas };
      const chunk = (await encodeChunk(batch)).bytes;
      const sections = chunkSections(chunk)!;
      const stored = chunk.subarray(sections.header + sections.embeddings);
      const view = new DataView(chunk.buffer, chunk.byteOffset);
      const section = view.getUint32(20, true) === 1 ? inflateRawSync(stored) : stored;
      const expected = [JSON.stringify(ids), JSON.stringify(documents), JSON.stringify(uris), ...metadatas].join("\n");
      expect(Buffer.from(section).equals(Buffer.from(expected, "utf8"))).toBe(true);
      const decoded = decodeChunk(chunk, { hash: "x", records: ids.length, decodedBytes: (await encodeChunk(batch)).decodedBytes, collection: "c" });
      expect(decoded.documents.values()).toEqual(documents);
      expect(decoded.uris).toEqual(uris);
    }),
    { numRuns: 200 },
  );
});
