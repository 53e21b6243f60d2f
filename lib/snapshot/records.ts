import { createHash } from "node:crypto";

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
  documents: (string | null)[];
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
    documents: indexes.map((i) => batch.documents[i]!),
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
    documents: batches.flatMap((b) => b.documents),
    uris: batches.flatMap((b) => b.uris),
    metadatas: batches.flatMap((b) => b.metadatas),
  };
}

/**
 * A 16-byte digest of one record's full content (id, embedding bytes, document, uri,
 * metadata), used to recognise a record that is already in the previous snapshot.
 */
export function recordDigests(batch: RecordBatch): Uint8Array {
  const out = new Uint8Array(batch.ids.length * 16);
  const bytesPerRecord = batch.dim * 4;
  for (let i = 0; i < batch.ids.length; i++) {
    const digest = createHash("sha256")
      .update(JSON.stringify([batch.ids[i], batch.documents[i], batch.uris[i]]) + "\n" + batch.metadatas[i] + "\n")
      .update(new Uint8Array(batch.embeddings.buffer, batch.embeddings.byteOffset + i * bytesPerRecord, bytesPerRecord))
      .digest();
    out.set(digest.subarray(0, 16), i * 16);
  }
  return out;
}
