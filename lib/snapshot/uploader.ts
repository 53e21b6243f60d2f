import { TaskPool } from "../concurrency.js";
import { isNotFound } from "../storage/errors.js";
import type { ObjectStat, Storage } from "../storage/types.js";
import { chunkKey, digestsKey, encodeChunk, encodeDigests, sha256Hex } from "./chunk.js";
import type { Chunk } from "./chunker.js";
import type { ChunkRef } from "./manifest.js";

/**
 * Deflate level for the text sections. Measured on the benchmark's text (BENCHMARKS.md):
 * 2 (with zlib's largest hash table) takes 95 ms and 3.94 MB, 4 takes 135-180 ms and
 * 3.65 MB, 6 245-270 ms and 3.48 MB; the backup is CPU-bound, and the text is an eighth
 * of a snapshot.
 */
const DEFAULT_COMPRESSION_LEVEL = 2;

export type CompressionLevel = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;

/**
 * Encodes and stores chunks in the background, a few at a time (so memory holds a few
 * chunks at most), skips chunks the store already holds intact, and counts the bytes it
 * really wrote. `upload` answers the chunk's ref once it is stored.
 */
export class Uploader {
  newBytes = 0;
  private readonly pool: TaskPool;

  constructor(
    private readonly storage: Storage,
    /** Hashes of the chunks committed snapshots name: present, not uploaded again. */
    private readonly known: Set<string>,
    concurrency: number,
    private readonly compressionLevel: CompressionLevel = DEFAULT_COMPRESSION_LEVEL,
    private readonly signal?: AbortSignal,
  ) {
    this.pool = new TaskPool(concurrency, signal);
  }

  /** Resolves once another chunk may start; throws an earlier upload's failure, or the signal's reason. */
  room(): Promise<void> {
    return this.pool.room();
  }

  /** Encodes and stores `chunk` (start it after `room()`); answers its ref. */
  upload(chunk: Chunk): Promise<ChunkRef> {
    return this.pool.run(async () => {
      const encoded = await encodeChunk(chunk.batch, this.compressionLevel);
      const hash = sha256Hex(encoded.bytes);
      const sidecar = encodeDigests(chunk.digests);
      if (!this.known.has(hash)) {
        this.known.add(hash);
        await this.store(hash, encoded.bytes, sidecar);
      }
      return { hash, records: encoded.records, bytes: encoded.bytes.byteLength, decodedBytes: encoded.decodedBytes, digests: sha256Hex(sidecar) };
    });
  }

  /** Waits for every upload; throws the first failure, or the signal's reason. */
  drain(): Promise<void> {
    return this.pool.drain();
  }

  /**
   * Content-addressed, so every call here is safe to repeat (the store retries transient
   * failures). A put that stores less than it was given fails in every driver (the
   * conformance suite's short-write cases), so no HEAD after it checks the size.
   */
  private async store(hash: string, bytes: Uint8Array, sidecar: Uint8Array): Promise<void> {
    this.signal?.throwIfAborted();
    const key = chunkKey(hash);
    const intact = await this.holdsIntact(key, bytes.byteLength);
    if (!intact) {
      this.signal?.throwIfAborted();
      await this.storage.put(key, bytes);
      this.newBytes += bytes.byteLength;
    }
    // The sidecar is written every time: its content follows from the chunk's, so this
    // repairs a damaged or forged one, which the manifest's `digests` would refuse.
    await this.storage.put(digestsKey(hash), sidecar);
    if (!intact) this.newBytes += sidecar.byteLength;
  }

  /**
   * Whether the store already holds this chunk: an object whose size is the chunk's is
   * trusted without a download (its name is its sha256, checked by every reader). One of
   * another size cannot hold these bytes (a short write of a failed backup, a damaged
   * file): it is put again, whatever its content.
   */
  private async holdsIntact(key: string, size: number): Promise<boolean> {
    let stat: ObjectStat;
    try {
      stat = await this.storage.head(key);
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
    return stat.size === size;
  }
}
