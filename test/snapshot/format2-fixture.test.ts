import { readFileSync } from "node:fs";
import { constants, deflateRawSync } from "node:zlib";
import { expect, it } from "vitest";
import { checkChunk, chunkSections, decodeChunk, sha256Hex } from "../../lib/snapshot/chunk.js";

// A chunk written by the code before issue 14 (format 2, CBC2, both sections deflated by
// node:zlib; test/fixtures/format2-chunk/make.ts) still decodes, and to exactly its records.

const dir = new URL("../fixtures/format2-chunk/", import.meta.url);
const chunk = new Uint8Array(readFileSync(new URL("chunk.bin", dir)));
const expected = JSON.parse(readFileSync(new URL("records.json", dir), "utf8")) as {
  hash: string;
  records: number;
  decodedBytes: number;
  dim: number;
  ids: string[];
  documents: (string | null)[];
  uris: (string | null)[];
  metadatas: string[];
  embeddingsBase64: string;
};
const expectation = { hash: expected.hash, records: expected.records, decodedBytes: expected.decodedBytes, collection: "c", dimension: expected.dim };

it("the fixture is what it claims: a CBC2 chunk whose sections node:zlib wrote (text level 2 memLevel 9, high plane Huffman only)", () => {
  expect(sha256Hex(chunk)).toBe(expected.hash);
  expect(new TextDecoder().decode(chunk.subarray(0, 4))).toBe("CBC2");
  const sections = chunkSections(chunk)!;
  const view = new DataView(chunk.buffer, chunk.byteOffset);
  expect([view.getUint32(12, true), view.getUint32(20, true)]).toEqual([1, 1]); // byte planes, deflated text
  const text = [JSON.stringify(expected.ids), JSON.stringify(expected.documents), JSON.stringify(expected.uris), ...expected.metadatas].join("\n");
  const storedText = chunk.subarray(sections.header + sections.embeddings);
  expect(Buffer.from(storedText).equals(deflateRawSync(Buffer.from(text), { level: 2, memLevel: 9 }))).toBe(true);
  expect(storedText.byteLength).toBeGreaterThan(8 * 1024); // more than one inflate step
  const floats = Buffer.from(expected.embeddingsBase64, "base64");
  const words = new Uint32Array(floats.buffer, floats.byteOffset, floats.byteLength / 4);
  const high = Uint8Array.from(words, (w) => w >>> 24);
  const storedHigh = chunk.subarray(sections.header + words.length * 3, sections.header + sections.embeddings);
  expect(Buffer.from(storedHigh).equals(deflateRawSync(high, { strategy: constants.Z_HUFFMAN_ONLY }))).toBe(true);
});

it("decodes to exactly the records it was written from, embeddings bit for bit, and passes checkChunk", async () => {
  const batch = await decodeChunk(chunk, expectation);
  expect(batch.ids).toEqual(expected.ids);
  expect(batch.documents.values()).toEqual(expected.documents);
  expect(batch.uris).toEqual(expected.uris);
  expect(batch.metadatas).toEqual(expected.metadatas);
  expect(batch.dim).toBe(expected.dim);
  expect(Buffer.from(batch.embeddings.buffer, batch.embeddings.byteOffset, batch.embeddings.byteLength).toString("base64")).toBe(expected.embeddingsBase64);
  expect(await checkChunk(chunk, expectation)).toBe(expected.records);
});
