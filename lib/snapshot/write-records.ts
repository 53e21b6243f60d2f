import type { ChromaRest, CollectionInfo } from "../chroma/rest.js";
import { TaskPool } from "../concurrency.js";
import type { Storage } from "../storage/types.js";
import { asIncompatible } from "./compatibility.js";
import type { CollectionEntry } from "./manifest.js";
import type { ProgressEvent } from "./progress.js";
import { readChunks } from "./read-chunks.js";
import { sliceBatch, type RecordBatch } from "./records.js";

export interface WriteOptions {
  /** Chunks downloaded and decoded ahead of the writes. */
  prefetch?: number;
  /** add/upsert requests in flight at once. */
  writeConcurrency?: number;
  /** Records per write, at most the server's maximum (a target's quota may lower it). */
  batchSize?: number;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

/**
 * Streams the collection's chunks into Chroma: chunks are read `prefetch` ahead of the
 * writes (readChunks), and written in batches no larger than the server takes,
 * `writeConcurrency` at once.
 */
export async function writeRecords(chroma: ChromaRest, storage: Storage, entry: CollectionEntry, into: CollectionInfo, mode: "add" | "upsert", options: WriteOptions): Promise<void> {
  const maxBatch = Math.min(options.batchSize ?? Infinity, await chroma.maxBatchSize());
  const writes = new TaskPool(options.writeConcurrency ?? 2);
  let written = 0;
  for await (const chunk of readChunks(storage, entry, Math.max(1, options.prefetch ?? 2))) {
    for (const batch of batchesOf(chunk, maxBatch)) {
      options.signal?.throwIfAborted();
      await writes.room();
      options.signal?.throwIfAborted();
      void writes.run(async () => {
        try {
          await chroma.writeRecords(into.id, batch, mode);
        } catch (error) {
          throw asIncompatible(error, entry.name, batch);
        }
        written += batch.ids.length;
        options.onProgress?.({ collection: entry.name, records: written, totalRecords: entry.records, bytes: 0 });
      });
    }
  }
  await writes.drain();
}

/** `chunk` in batches of at most `size` records (views, no copies). */
function* batchesOf(chunk: RecordBatch, size: number): Generator<RecordBatch> {
  for (let start = 0; start < chunk.ids.length; start += size) yield sliceBatch(chunk, start, Math.min(chunk.ids.length, start + size));
}
