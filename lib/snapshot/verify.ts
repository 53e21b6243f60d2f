import { SnapshotCorruptError } from "../errors.js";
import type { Storage } from "../storage/types.js";
import { forEachLimited } from "../concurrency.js";
import type { Manifest } from "./manifest.js";
import { checkStoredChunk } from "./read-chunk.js";

export interface VerifyReport {
  ok: boolean;
  chunks: number;
  records: number;
  bytes: number;
  errors: { chunk: string; collection: string; message: string }[];
}

/**
 * Chunks read and checked at once: in Node the main thread reads and hashes the next
 * chunks while the codec pool's threads inflate the sections of those before (codec.ts),
 * so enough are in flight to keep both busy; in a Worker their reads overlap.
 */
const VERIFY_CONCURRENCY = 6;

/**
 * Reads every chunk of a snapshot, checks its size and sha256, inflates every section
 * to its exact size and checks the text columns; touches no Chroma.
 */
export async function verifySnapshot(storage: Storage, manifest: Manifest, onChunk?: (done: number, total: number) => void, signal?: AbortSignal): Promise<VerifyReport> {
  const work = manifest.collections.flatMap((collection) => collection.chunks.map((ref) => ({ collection, ref })));
  const errors: (VerifyReport["errors"][number] | null)[] = work.map(() => null);
  let done = 0;
  let records = 0;
  let bytes = 0;
  await forEachLimited(work, VERIFY_CONCURRENCY, async ({ collection, ref }, i) => {
    signal?.throwIfAborted(); // the caller left: stop reading
    try {
      const held = await checkStoredChunk(storage, ref, collection.name, collection.dimension);
      records += held - (ref.drop?.length ?? 0);
      bytes += ref.bytes;
    } catch (err) {
      if (!(err instanceof SnapshotCorruptError)) throw err;
      errors[i] = { chunk: ref.hash, collection: collection.name, message: err.message };
    }
    onChunk?.(++done, work.length);
  });
  const found = errors.filter((e) => e !== null);
  return { ok: found.length === 0, chunks: work.length, records, bytes, errors: found };
}
