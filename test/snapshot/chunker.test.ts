import fc from "fast-check";
import { expect, it } from "vitest";
import { JsonColumn } from "../../lib/json/json-column.js";
import { Chunker, type Chunk } from "../../lib/snapshot/chunker.js";
import type { RecordBatch } from "../../lib/snapshot/records.js";

const DIM = 4;

/** A page of `n` records numbered from `first`; digest i is 16 bytes of the record's number. */
function page(first: number, n: number): { batch: RecordBatch; digests: Uint8Array } {
  const ids = Array.from({ length: n }, (_, i) => `id-${first + i}`);
  const embeddings = new Float32Array(n * DIM).map((_, k) => first + Math.floor(k / DIM) + (k % DIM) / 10);
  const batch: RecordBatch = {
    ids,
    dim: DIM,
    embeddings,
    documents: JsonColumn.fromValues(ids.map((id, i) => ((first + i) % 5 === 0 ? null : `doc of ${id}`))),
    uris: ids.map(() => null),
    metadatas: ids.map((id) => `{"id":${JSON.stringify(id)}}`),
  };
  const digests = new Uint8Array(n * 16);
  for (let i = 0; i < n; i++) digests.fill((first + i) % 256, i * 16, i * 16 + 16);
  return { batch, digests };
}

it("chunks hold exactly the records pushed, in order, with their digests, whatever is skipped", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 8 }), fc.func(fc.boolean()), fc.integer({ min: 64, max: 4096 }), (sizes, skip, minBytes) => {
      const chunker = new Chunker(minBytes, minBytes * 2);
      const chunks: Chunk[] = [];
      const pushed: number[] = [];
      let first = 0;
      for (const n of sizes) {
        const { batch, digests } = page(first, n);
        for (let i = 0; i < n; i++) {
          if (skip(first + i)) continue;
          pushed.push(first + i);
          const chunk = chunker.push(batch, digests, i);
          if (chunk) chunks.push(chunk);
        }
        first += n;
      }
      const last = chunker.flush();
      if (last) chunks.push(last);
      const ids = chunks.flatMap((c) => c.batch.ids);
      expect(ids).toEqual(pushed.map((k) => `id-${k}`));
      for (const c of chunks) {
        const n = c.batch.ids.length;
        expect(c.digests.byteLength).toBe(n * 16);
        expect(c.batch.documents.length).toBe(n);
        expect(c.batch.documents.values()).toEqual(c.batch.ids.map((id) => (Number(id.slice(3)) % 5 === 0 ? null : `doc of ${id}`)));
        for (let i = 0; i < n; i++) {
          const k = Number(c.batch.ids[i]!.slice(3));
          expect(c.digests[i * 16]).toBe(k % 256);
          expect(Array.from(c.batch.embeddings.subarray(i * DIM, (i + 1) * DIM))).toEqual([0, 1, 2, 3].map((d) => Math.fround(k + d / 10)));
          expect(c.batch.metadatas[i]).toBe(`{"id":"id-${k}"}`);
        }
      }
    }),
  );
});

it("a chunk of records picked out of pages holds none of the pages' buffers; a whole page stays a view", () => {
  // An incremental backup: a few changed records per page, the chunk filling over many pages.
  const chunker = new Chunker(1 << 20, 1 << 21);
  const pages = Array.from({ length: 10 }, (_, p) => page(p * 100, 100));
  for (const { batch, digests } of pages) for (const i of [3, 50, 97]) expect(chunker.push(batch, digests, i)).toBeNull();
  const picked = chunker.flush()!;
  expect(picked.batch.ids).toHaveLength(30);
  for (const { batch, digests } of pages) {
    expect(picked.batch.embeddings.buffer).not.toBe(batch.embeddings.buffer);
    expect(picked.batch.documents.bytes.buffer).not.toBe(batch.documents.bytes.buffer);
    expect(picked.digests.buffer).not.toBe(digests.buffer);
  }
  // One run of part of a page, alone in its chunk, is a copy too.
  const { batch: one, digests: oneDigests } = pages[0]!;
  for (let i = 10; i < 20; i++) chunker.push(one, oneDigests, i);
  const part = chunker.flush()!;
  expect(part.batch.ids).toEqual(one.ids.slice(10, 20));
  expect(part.batch.embeddings.buffer).not.toBe(one.embeddings.buffer);
  expect(part.batch.documents.bytes.buffer).not.toBe(one.documents.bytes.buffer);
  // A first backup: every record of a page, no copy before the chunk is encoded.
  for (let i = 0; i < 100; i++) chunker.push(one, oneDigests, i);
  const whole = chunker.flush()!;
  expect(whole.batch.embeddings.buffer).toBe(one.embeddings.buffer);
  expect(whole.batch.ids).toEqual(one.ids);
});
