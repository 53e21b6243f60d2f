import { SnapshotCorruptError } from "../errors.js";
import { isNotFound } from "../storage/errors.js";
import { readAll } from "../storage/streams.js";
import type { Storage } from "../storage/types.js";
import { chunkKey, decodeChunk, sha256Hex } from "./chunk.js";
import type { ChunkRef } from "./manifest.js";
import type { RecordBatch } from "./records.js";

/**
 * Fetches a chunk and checks it before anything trusts it: present, exactly the size the
 * manifest records (reading stops one byte past it), and its sha256 equal to its name.
 */
export async function fetchVerifiedChunk(storage: Storage, ref: ChunkRef, collection: string): Promise<Uint8Array> {
  const corrupt = (why: string, cause?: unknown): never => {
    throw new SnapshotCorruptError(`collection ${collection}: chunk ${ref.hash} ${why}`, ref.hash, collection, { cause });
  };
  let bytes: Uint8Array;
  try {
    bytes = await readAll(await storage.get(chunkKey(ref.hash)), ref.bytes);
  } catch (err) {
    if (isNotFound(err)) return corrupt("is missing from the store");
    if (err instanceof RangeError) return corrupt(`is larger than the ${ref.bytes} bytes the manifest records`);
    throw err;
  }
  if (bytes.byteLength !== ref.bytes) corrupt(`is ${bytes.byteLength} bytes, the manifest records ${ref.bytes}`);
  const actual = await sha256Hex(bytes);
  if (actual !== ref.hash) corrupt(`fails its checksum (content hashes to ${actual})`);
  return bytes;
}

/** A verified, decoded chunk. */
export async function readChunk(storage: Storage, ref: ChunkRef, collection: string): Promise<RecordBatch> {
  const bytes = await fetchVerifiedChunk(storage, ref, collection);
  return decodeChunk(bytes, { hash: ref.hash, records: ref.records, decodedBytes: ref.decodedBytes, collection });
}
