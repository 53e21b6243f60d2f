import { mapAhead } from "../concurrency.js";
import type { Storage } from "../storage/types.js";
import type { CollectionEntry } from "./manifest.js";
import { readChunk } from "./read-chunk.js";
import { filterBatch, type RecordBatch } from "./records.js";

/**
 * The live records of a collection's chunks, chunk by chunk, in the manifest's order:
 * each chunk fetched, verified and decoded (readChunk) `prefetch` chunks ahead of the
 * consumer, its dropped records left out.
 */
export function readChunks(storage: Storage, entry: CollectionEntry, prefetch: number): AsyncGenerator<RecordBatch> {
  return mapAhead(entry.chunks, prefetch, async (ref) => {
    const batch = await readChunk(storage, ref, entry.name, entry.dimension);
    if (!ref.drop?.length) return batch;
    const drop = new Set(ref.drop);
    return filterBatch(batch, (r) => !drop.has(r));
  });
}
