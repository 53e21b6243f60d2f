import * as crypto from "node:crypto";
import { JsonColumn, writeUtf8Around } from "../json/json-column.js";

/**
 * A batch of records in columns: what a Chroma page becomes, what a chunk holds, and
 * what a restore writes. Embeddings are packed float32 (`dim` per record, 0 when the
 * records have none); metadata is kept as canonical JSON text (keys sorted, numbers as
 * Chroma wrote them), so `2.0` stays a float and identical records hash identically.
 */
export interface RecordBatch {
  ids: string[];
  dim: number;
  embeddings: Float32Array;
  /** As JSON text, copied from Chroma's response into chunks as it came. */
  documents: JsonColumn;
  uris: (string | null)[];
  metadatas: string[];
}

// Chunks store float32 little-endian; every platform this runs on (x86-64, arm64,
// Workers) is little-endian, so typed arrays are used as is.
if (new Uint8Array(new Float32Array([1]).buffer)[3] !== 0x3f) {
  throw new Error("chroma-backup needs a little-endian platform");
}

export function sliceBatch(batch: RecordBatch, start: number, end: number): RecordBatch {
  return {
    ids: batch.ids.slice(start, end),
    dim: batch.dim,
    embeddings: batch.embeddings.subarray(start * batch.dim, end * batch.dim),
    documents: batch.documents.slice(start, end),
    uris: batch.uris.slice(start, end),
    metadatas: batch.metadatas.slice(start, end),
  };
}

/** The same records in buffers of their own: a view into a page (sliceBatch) holds the whole page. */
export function copyBatch(batch: RecordBatch): RecordBatch {
  return { ...batch, ids: batch.ids.slice(), embeddings: batch.embeddings.slice(), documents: batch.documents.copy(), uris: batch.uris.slice(), metadatas: batch.metadatas.slice() };
}

/** Keeps the records whose index `keep` accepts. */
export function filterBatch(batch: RecordBatch, keep: (index: number) => boolean): RecordBatch {
  const indexes: number[] = [];
  for (let i = 0; i < batch.ids.length; i++) if (keep(i)) indexes.push(i);
  if (indexes.length === batch.ids.length) return batch;
  const embeddings = new Float32Array(indexes.length * batch.dim);
  indexes.forEach((from, to) => embeddings.set(batch.embeddings.subarray(from * batch.dim, (from + 1) * batch.dim), to * batch.dim));
  return {
    ids: indexes.map((i) => batch.ids[i]!),
    dim: batch.dim,
    embeddings,
    documents: batch.documents.pick(indexes),
    uris: indexes.map((i) => batch.uris[i]!),
    metadatas: indexes.map((i) => batch.metadatas[i]!),
  };
}

/** Concatenates batches of the same dimension. */
export function concatBatches(batches: RecordBatch[]): RecordBatch {
  if (batches.length === 1) return batches[0]!;
  const dim = batches[0]?.dim ?? 0;
  const total = batches.reduce((n, b) => n + b.ids.length, 0);
  const embeddings = new Float32Array(total * dim);
  let offset = 0;
  for (const b of batches) {
    embeddings.set(b.embeddings, offset);
    offset += b.embeddings.length;
  }
  return {
    ids: batches.flatMap((b) => b.ids),
    dim,
    embeddings,
    documents: JsonColumn.concat(batches.map((b) => b.documents)),
    uris: batches.flatMap((b) => b.uris),
    metadatas: batches.flatMap((b) => b.metadatas),
  };
}

/**
 * A 16-byte digest of one record's full content, used to recognise a record that is
 * already in the previous snapshot: sha256 of the UTF-8 of
 * `JSON.stringify([id, document, uri]) + "\n" + metadata + "\n"`, then the embedding's
 * bytes. Each record's input is laid out in one reused buffer and hashed in one call.
 */
export function recordDigests(batch: RecordBatch): Uint8Array {
  const n = batch.ids.length;
  const out = new Uint8Array(n * 16);
  const bytesPerRecord = batch.dim * 4;
  const embeddings = new Uint8Array(batch.embeddings.buffer, batch.embeddings.byteOffset, n * bytesPerRecord);
  for (let i = 0; i < n; i++) {
    const head = `[${JSON.stringify(batch.ids[i])},`;
    const tail = `,${JSON.stringify(batch.uris[i])}]\n${batch.metadatas[i]}\n`;
    const document = batch.documents.text(i);
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    const input = scratch(3 * (head.length + tail.length) + document.byteLength + bytesPerRecord);
    let o = writeUtf8Around(input, head, document, tail);
    input.set(embeddings.subarray(i * bytesPerRecord, (i + 1) * bytesPerRecord), o);
    o += bytesPerRecord;
    out.set(sha256Prefix(input.subarray(0, o)), i * 16);
  }
  return out;
}

let scratchBuffer = new Uint8Array(64 * 1024);
function scratch(size: number): Uint8Array {
  if (scratchBuffer.byteLength < size) scratchBuffer = new Uint8Array(size * 2);
  return scratchBuffer;
}

// crypto.hash (Node >= 20.12) hashes in one call without a Hash object, which is most of
// the cost for inputs of a few KiB; Workers may lack it.
const oneShot = (crypto as { hash?: (algorithm: string, data: Uint8Array, encoding: "buffer") => Uint8Array }).hash;
const sha256Prefix = (bytes: Uint8Array): Uint8Array =>
  (oneShot ? oneShot("sha256", bytes, "buffer") : crypto.createHash("sha256").update(bytes).digest()).subarray(0, 16);
