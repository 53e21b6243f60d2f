import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, opendir, realpath } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { ImageCorruptError, InvalidRequestError, NotFoundError } from "../errors.js";
import { forEachLimited, listSnapshotIds } from "../snapshot/catalog.js";
import { chunkKey, sha256Hex } from "../snapshot/chunk.js";
import { deflateSection } from "../snapshot/codec.js";
import type { ManifestKeys } from "../snapshot/signing.js";
import { isNotFound, StorageError } from "../storage/errors.js";
import { readAll, TooLargeError } from "../storage/streams.js";
import type { Storage } from "../storage/types.js";
import { cdcChunks } from "./cdc.js";
import { imageIdOfKey, imageKey, parseImageManifest, serializeImageManifest } from "./manifest.js";
import { IMAGE_EXCLUDED_FILES, type ImageChunkRef, type ImageCollection, type ImageFile, type ImageManifest } from "./types.js";

export { downloadImage } from "./download.js";

/** Chunk uploads in flight at once (each holds one chunk: memory stays a few chunks). */
const UPLOAD_WIDTH = 4;
/** Level 1: SQLite pages compress about as well as at 2; HNSW floats barely compress at any level. */
const DEFLATE = { level: 1 };
/** An image manifest lists ~1 chunk per 16 KiB of files: 64 MiB covers terabytes. */
const MAX_IMAGE_MANIFEST_BYTES = 64 * 1024 * 1024;

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
    formatVersion: 1,
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
    const stored = await deflateSection(raw, DEFLATE);
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

/**
 * The image of `snapshotId`, checked (ImageCorruptError when it fails three reads, a read
 * cut short on the way being no damage). No image: NotFoundError.
 */
export async function readImage(storage: Storage, snapshotId: string, keys?: ManifestKeys): Promise<ImageManifest> {
  const key = imageKey(snapshotId);
  for (let read = 0; ; read++) {
    let bytes: Uint8Array;
    try {
      bytes = await readAll(await storage.get(key), MAX_IMAGE_MANIFEST_BYTES);
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`no image of snapshot ${snapshotId}`);
      if (err instanceof TooLargeError) throw new ImageCorruptError(`image of snapshot ${snapshotId}: manifest is larger than ${MAX_IMAGE_MANIFEST_BYTES} bytes`, snapshotId, null);
      throw err;
    }
    try {
      return parseImageManifest(bytes, snapshotId, keys);
    } catch (err) {
      if (read >= 2 || !(err instanceof ImageCorruptError)) throw err;
    }
  }
}

export interface ImageCatalog {
  /** Newest snapshot first. */
  images: ImageManifest[];
  /** Image manifests that failed their checks: never used. */
  damaged: { snapshot: string; error: string }[];
}

export async function readImageCatalog(storage: Storage, keys?: ManifestKeys): Promise<ImageCatalog> {
  const ids: string[] = [];
  for await (const info of storage.list("images/")) {
    const id = imageIdOfKey(info.key);
    if (id) ids.push(id);
  }
  const images: ImageManifest[] = [];
  const damaged: ImageCatalog["damaged"] = [];
  await forEachLimited(ids, 8, async (id) => {
    try {
      images.push(await readImage(storage, id, keys));
    } catch (err) {
      if (err instanceof ImageCorruptError) damaged.push({ snapshot: id, error: err.message });
      else if (!(err instanceof NotFoundError)) throw err; // deleted while listing: gone
    }
  });
  images.sort(newestImageFirst);
  return { images, damaged };
}

/** The images that pass their checks, newest snapshot first (damaged ones are left out: a cache is never trusted blind). */
export async function listImages(storage: Storage, keys?: ManifestKeys): Promise<ImageManifest[]> {
  return (await readImageCatalog(storage, keys)).images;
}

function newestImageFirst(a: ImageManifest, b: ImageManifest): number {
  return a.snapshot < b.snapshot ? 1 : a.snapshot > b.snapshot ? -1 : 0;
}

/**
 * The image to start from: made by `chromaVersion` (files of another Chroma version may
 * not open, or open wrong), of the newest snapshot at or before `atOrBefore` (snapshot ids
 * sort by time; catch-up only moves forward). Null when none fits.
 */
export function pickImage(images: readonly ImageManifest[], want: { chromaVersion: string; atOrBefore: string }): ImageManifest | null {
  let best: ImageManifest | null = null;
  for (const m of images) {
    if (m.chromaVersion !== want.chromaVersion || m.snapshot > want.atOrBefore) continue;
    if (!best || m.snapshot > best.snapshot) best = m;
  }
  return best;
}

export interface ImagePrunePlan {
  kept: ImageManifest[];
  /** Snapshot ids of the image manifests deleted (or, in a dry run, that would be). */
  deleted: string[];
}

/**
 * Which images stay: the newest `keep` whose snapshot still exists. An image whose
 * snapshot is gone is useless (catch-up starts from the image's own snapshot manifest),
 * and a damaged image manifest is deleted (a cache: the next one is made anew).
 * `snapshots`: the snapshot ids that remain after this prune (default: those in the store).
 */
export async function planImagePrune(storage: Storage, keep: number, options: { dryRun?: boolean; keys?: ManifestKeys; snapshots?: readonly string[] } = {}): Promise<ImagePrunePlan> {
  const catalog = await readImageCatalog(storage, options.keys);
  const snapshots = new Set(options.snapshots ?? (await listSnapshotIds(storage)));
  const usable = catalog.images.filter((m) => snapshots.has(m.snapshot));
  const kept = usable.slice(0, Math.max(0, keep));
  const keptIds = new Set(kept.map((m) => m.snapshot));
  const deleted = [...catalog.images.filter((m) => !keptIds.has(m.snapshot)).map((m) => m.snapshot), ...catalog.damaged.map((d) => d.snapshot)];
  if (!options.dryRun) for (const id of deleted) await storage.delete(imageKey(id));
  return { kept, deleted };
}

/** Deletes the image manifests planImagePrune does not keep; their chunks go in prune's chunk sweep. */
export async function pruneImages(storage: Storage, keep: number, options: { dryRun?: boolean; keys?: ManifestKeys; snapshots?: readonly string[] } = {}): Promise<{ kept: string[]; deleted: string[] }> {
  const plan = await planImagePrune(storage, keep, options);
  return { kept: plan.kept.map((m) => m.snapshot), deleted: plan.deleted };
}
