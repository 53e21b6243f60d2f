import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, opendir, realpath } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { InvalidRequestError } from "../errors.js";
import { chunkKey, sha256Hex } from "../snapshot/chunk.js";
import { deflateSection } from "../snapshot/codec.js";
import type { ManifestKeys } from "../snapshot/signing.js";
import { isNotFound, StorageError } from "../storage/errors.js";
import type { Storage } from "../storage/types.js";
import { cdcChunks } from "./cdc.js";
import { imageKey, serializeImageManifest } from "./manifest.js";
import { IMAGE_EXCLUDED_FILES, IMAGE_FORMAT_VERSION, type ImageChunkRef, type ImageCollection, type ImageFile, type ImageManifest } from "./types.js";

/** Chunk uploads in flight at once: a remote store's latency, not bandwidth, bounds ~16 KiB requests (each holds one chunk). */
const UPLOAD_WIDTH = 8;
/** Level 1, zlib's cheapest matching: the files are mostly float bytes (HNSW, SQLite's embedding rows), which barely compress at any level. */
const DEFLATE = { level: 1 };
/**
 * A chunk whose deflate keeps more than this share of its bytes is stored raw (ImageChunkRef
 * `codec: "raw"`): every cold start would inflate it for little saved. Poorly compressing
 * pieces are also the slowest to inflate (literals decoded one by one): on bench/images.ts'
 * image (20,000 records, 148 MB, 7,100 chunks) chunks deflated to 0.8-1.0 of their size
 * inflated at a fifth of the rate of those deflated to under 0.1. Above 3/4: 36 MB of the
 * 148 MB (1,934 chunks, about a third of the inflate time) stored raw, for 4.2 MB (5%) more
 * stored bytes.
 */
const RAW_ABOVE = 0.75;

export interface UploadImageOptions {
  signal?: AbortSignal;
  keys?: ManifestKeys;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface UploadImageResult {
  manifest: ImageManifest;
  /** Stored bytes this call wrote (new chunks). */
  uploadedBytes: number;
  /** Stored bytes of chunks the store already held (or this image listed before). */
  reusedBytes: number;
}

/**
 * Uploads a copy of `dir` (a data directory no process is writing) as the image of
 * `meta.snapshot`: each file is cut into content-defined chunks, each compressed and stored
 * under chunks/<aa>/<sha256 of stored bytes> unless the store holds it already; the
 * manifest images/<snapshot>.json is written last, so an upload that fails leaves only
 * unreferenced chunks. Skips IMAGE_EXCLUDED_FILES and anything not a regular file or
 * folder; a symlink that leads out of `dir` is refused (InvalidRequestError).
 *
 * The caller holds the store lock (as a backup does) while this runs: prune deletes
 * unreferenced chunks at once under that lock, which would take the new ones from under
 * an image not yet committed.
 */
export async function uploadImage(
  storage: Storage,
  dir: string,
  meta: { snapshot: string; chromaVersion: string; collections: ImageCollection[] },
  options: UploadImageOptions = {},
): Promise<UploadImageResult> {
  const key = imageKey(meta.snapshot);
  const { signal } = options;
  const entries = await listDataFiles(dir);
  const totalBytes = entries.reduce((n, e) => n + e.size, 0);
  const uploader = new ChunkUploader(storage, signal);
  const files: ImageFile[] = [];
  let doneBytes = 0;
  try {
    for (const entry of entries) {
      signal?.throwIfAborted();
      const whole = createHash("sha256");
      const chunks: ImageChunkRef[] = [];
      let size = 0;
      for await (const piece of cdcChunks(createReadStream(entry.absolute, { highWaterMark: 256 * 1024 }))) {
        whole.update(piece);
        size += piece.byteLength;
        const ref: ImageChunkRef = { hash: "", bytes: 0, size: piece.byteLength };
        chunks.push(ref);
        await uploader.add(piece, ref);
        doneBytes += piece.byteLength;
        options.onProgress?.(doneBytes, totalBytes);
      }
      files.push({ path: entry.path, size, sha256: whole.digest("hex"), chunks });
    }
    await uploader.drain();
  } catch (err) {
    await uploader.settle();
    throw err;
  }
  signal?.throwIfAborted();
  const manifest: ImageManifest = {
    formatVersion: IMAGE_FORMAT_VERSION,
    snapshot: meta.snapshot,
    chromaVersion: meta.chromaVersion,
    createdAt: new Date().toISOString(),
    bytes: files.reduce((n, f) => n + f.size, 0),
    storedBytes: files.reduce((n, f) => n + f.chunks.reduce((m, c) => m + c.bytes, 0), 0),
    files,
    collections: meta.collections,
  };
  await storage.put(key, serializeImageManifest(manifest, options.keys));
  return { manifest, uploadedBytes: uploader.uploadedBytes, reusedBytes: uploader.reusedBytes };
}

/** Compresses and stores chunks, a few at once, each content address once per upload. */
class ChunkUploader {
  uploadedBytes = 0;
  reusedBytes = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly seen = new Map<string, Promise<void>>();
  private failure: { error: unknown } | null = null;

  constructor(
    private readonly storage: Storage,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Starts storing `raw`; fills in `ref` when compressed. Waits while UPLOAD_WIDTH are in flight. */
  async add(raw: Uint8Array, ref: ImageChunkRef): Promise<void> {
    this.check();
    const task = this.store(raw, ref).catch((error: unknown) => {
      this.failure ??= { error };
    });
    this.inFlight.add(task);
    void task.finally(() => this.inFlight.delete(task));
    while (this.inFlight.size >= UPLOAD_WIDTH) await Promise.race(this.inFlight);
    this.check();
  }

  async drain(): Promise<void> {
    await this.settle();
    this.check();
  }

  /** Waits for every started task (after a failure too: nothing runs on behind the caller). */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
  }

  private check(): void {
    if (this.failure) throw this.failure.error;
    this.signal?.throwIfAborted();
  }

  private async store(raw: Uint8Array, ref: ImageChunkRef): Promise<void> {
    const deflated = await deflateSection(raw, DEFLATE);
    const keepRaw = deflated.byteLength > raw.byteLength * RAW_ABOVE;
    const stored = keepRaw ? raw : deflated;
    if (keepRaw) ref.codec = "raw";
    ref.hash = sha256Hex(stored);
    ref.bytes = stored.byteLength;
    const earlier = this.seen.get(ref.hash);
    if (earlier) {
      await earlier;
      this.reusedBytes += stored.byteLength;
      return;
    }
    const put = this.putUnlessHeld(ref.hash, stored);
    this.seen.set(ref.hash, put);
    await put;
  }

  /** Content-addressed, so a chunk the store holds at its full size is reused. */
  private async putUnlessHeld(hash: string, bytes: Uint8Array): Promise<void> {
    this.signal?.throwIfAborted();
    const key = chunkKey(hash);
    const held = await this.storage.head(key).then(
      (s) => s.size,
      (err: unknown) => {
        if (isNotFound(err)) return -1;
        throw err;
      },
    );
    if (held === bytes.byteLength) {
      this.reusedBytes += bytes.byteLength;
      return;
    }
    this.signal?.throwIfAborted();
    await this.storage.put(key, bytes);
    // As backup.ts: the manifest must never name a chunk the store does not hold whole.
    const stat = await this.storage.head(key);
    if (stat.size !== bytes.byteLength) {
      throw new StorageError(`${this.storage.driver}: put "${key}" stored ${stat.size} bytes of ${bytes.byteLength}`, { driver: this.storage.driver, operation: "put", key, retryable: true, kind: "unavailable" });
    }
    this.uploadedBytes += bytes.byteLength;
  }
}

interface DataFile {
  /** Relative, `/`-separated. */
  path: string;
  absolute: string;
  size: number;
}

/** The regular files under `root`, sorted by path; what an image holds. */
export async function listDataFiles(root: string): Promise<DataFile[]> {
  const realRoot = await realpath(root);
  const out: DataFile[] = [];
  async function walk(folder: string): Promise<void> {
    for await (const entry of await opendir(folder)) {
      const absolute = join(folder, entry.name);
      const path = relative(root, absolute).split(sep).join("/");
      if (IMAGE_EXCLUDED_FILES.includes(path)) continue;
      if (entry.isDirectory()) {
        await walk(absolute);
      } else if (entry.isFile()) {
        out.push({ path, absolute, size: (await lstat(absolute)).size });
      } else if (entry.isSymbolicLink()) {
        const target = await realpath(absolute).catch(() => null);
        if (target === null || (target !== realRoot && !target.startsWith(realRoot + sep))) {
          throw new InvalidRequestError(`image of ${root}: ${path} is a symlink that leads out of the data directory`);
        }
        // A link inside the folder to a file is stored as that file's content; links to folders are skipped (no loops).
        const info = await lstat(target);
        if (info.isFile()) out.push({ path, absolute: target, size: info.size });
      }
      // Sockets, FIFOs and devices belong to a running process, never to the data.
    }
  }
  await walk(root);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
