import { SnapshotCorruptError } from "../errors.js";
import { isNotFound } from "../storage/errors.js";
import { readAll, TooLargeError } from "../storage/streams.js";
import type { Storage } from "../storage/types.js";
import { checkChunk, chunkKey, decodeChunk, sha256Hex } from "./chunk.js";
import type { ChunkRef } from "./manifest.js";
import type { RecordBatch } from "./records.js";

/**
 * Fetches a stored object named by its sha256 and checks it before anything trusts it:
 * present, exactly `ref.bytes` long (reading stops one byte past it), and its sha256 equal
 * to its name. Transient storage failures are retried by the store (retryingStorage); a
 * read that fails these checks is read again, up to three reads (damage at rest repeats; a
 * read cut short or garbled on the way does not). Answers the bytes, or why they are not
 * to be trusted ("is missing from the store", "fails its checksum ...").
 */
export async function fetchByHash(storage: Storage, ref: { hash: string; bytes: number }): Promise<Uint8Array | { problem: string }> {
  let problem = "";
  for (let read = 0; read < 3; read++) {
    let bytes: Uint8Array;
    try {
      bytes = await readAll(await storage.get(chunkKey(ref.hash)), ref.bytes);
    } catch (err) {
      if (isNotFound(err)) return { problem: "is missing from the store" };
      if (!(err instanceof TooLargeError)) throw err;
      problem = `is larger than the ${ref.bytes} bytes the manifest records`;
      continue;
    }
    if (bytes.byteLength !== ref.bytes) {
      problem = `is ${bytes.byteLength} bytes, the manifest records ${ref.bytes}`;
      continue;
    }
    const actual = sha256Hex(bytes);
    if (actual === ref.hash) return bytes;
    problem = `fails its checksum (content hashes to ${actual})`;
  }
  return { problem };
}

/** A snapshot chunk, checked as fetchByHash does; SnapshotCorruptError naming the collection when it fails. */
export async function fetchVerifiedChunk(storage: Storage, ref: ChunkRef, collection: string): Promise<Uint8Array> {
  const fetched = await fetchByHash(storage, ref);
  if (fetched instanceof Uint8Array) return fetched;
  throw new SnapshotCorruptError(`collection ${collection}: chunk ${ref.hash} ${fetched.problem}`, ref.hash, collection);
}

export async function readChunk(storage: Storage, ref: ChunkRef, collection: string, dimension?: number | null): Promise<RecordBatch> {
  const bytes = await fetchVerifiedChunk(storage, ref, collection);
  return decodeChunk(bytes, { hash: ref.hash, records: ref.records, decodedBytes: ref.decodedBytes, collection, dimension });
}

/** Fetches and fully checks a chunk without building its records (docs: checkChunk); returns its record count. */
export async function checkStoredChunk(storage: Storage, ref: ChunkRef, collection: string, dimension?: number | null): Promise<number> {
  const bytes = await fetchVerifiedChunk(storage, ref, collection);
  return checkChunk(bytes, { hash: ref.hash, records: ref.records, decodedBytes: ref.decodedBytes, collection, dimension });
}
