import fc from "fast-check";
import { expect, it } from "vitest";
import { deflateSync } from "fflate";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { SnapshotCorruptError } from "../../lib/errors.js";
import { checkChunk, chunkSections, decodeChunk, encodeChunk, type ChunkExpectation } from "../../lib/snapshot/chunk.js";
import { HEADER_V2, writeHeaderV2 } from "../../lib/snapshot/chunk-layout.js";
import { INFLATE_STEP, inflateStepsTaken } from "../../lib/snapshot/codec.js";
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
  const decoded = await decodeChunk(moved, expectation);
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
      const decoded = await decodeChunk(chunk, { hash: "x", records: ids.length, decodedBytes: (await encodeChunk(batch)).decodedBytes, collection: "c" });
      expect(decoded.documents.values()).toEqual(documents);
      expect(decoded.uris).toEqual(uris);
    }),
    { numRuns: 200 },
  );
});

/** A CBC2 chunk of the given sections and codecs, and the manifest's claims that match its header. */
function chunkWith(n: number, dim: number, embeddings: Uint8Array, embeddingCodec: number, text: Uint8Array, textCodec: number, textBytes: number): { bytes: Uint8Array; expect: ChunkExpectation } {
  const bytes = new Uint8Array(HEADER_V2 + embeddings.byteLength + text.byteLength);
  writeHeaderV2(bytes, { records: n, dim, embeddingCodec, embeddingStored: embeddings.byteLength, textCodec, textStored: text.byteLength, textBytes });
  bytes.set(embeddings, HEADER_V2);
  bytes.set(text, HEADER_V2 + embeddings.byteLength);
  return { bytes, expect: { hash: "bomb", records: n, decodedBytes: HEADER_V2 + n * dim * 4 + textBytes, collection: "c", dimension: dim || null } };
}

it("a bomb in either section (the text, the embeddings' high-byte plane) is refused as corruption within one inflate step, by decodeChunk and checkChunk", async () => {
  const bomb = deflateRawSync(new Uint8Array(20 * 1024 * 1024), { level: 9 }); // ~20 KB that inflate to 20 MiB
  expect(bomb.byteLength).toBeGreaterThan(INFLATE_STEP);
  const text = new TextEncoder().encode('["a","b"]\n["x",null]\n[null,null]\nnull\nnull');
  const n = 2;
  const dim = 4;
  const low = new Uint8Array(n * dim * 3);
  const cases = {
    "text section": chunkWith(n, dim, new Uint8Array(n * dim * 4), 0, bomb, 1, text.byteLength),
    "embedding high-byte plane": chunkWith(n, dim, Buffer.concat([low, bomb]), 1, text, 0, text.byteLength),
  };
  for (const [section, { bytes, expect: claims }] of Object.entries(cases)) {
    for (const decode of [decodeChunk, checkChunk] as ((b: Uint8Array, e: ChunkExpectation) => unknown)[]) {
      const before = inflateStepsTaken();
      const refusal = await Promise.resolve()
        .then(() => decode(bytes, claims))
        .then(() => null, (err: unknown) => err);
      expect(refusal, `${section}, ${decode.name}`).toBeInstanceOf(SnapshotCorruptError);
      expect((refusal as Error).message).toMatch(new RegExp(`${section} inflates to more than`));
      expect(inflateStepsTaken() - before, `${section}, ${decode.name}`).toBe(1);
    }
  }
  // The same chunks with honest sections decode: the refusals above are the bombs' doing.
  const honest = chunkWith(n, dim, Buffer.concat([low, deflateSync(new Uint8Array(n * dim), { level: 1 })]), 1, deflateSync(text, { level: 2 }), 1, text.byteLength);
  expect((await decodeChunk(honest.bytes, honest.expect)).ids).toEqual(["a", "b"]);
  expect(await checkChunk(honest.bytes, honest.expect)).toBe(n);
});
