import { ImageCorruptError, NotFoundError } from "../errors.js";
import { forEachLimited, listSnapshotIds } from "../snapshot/catalog.js";
import type { ManifestKeys } from "../snapshot/signing.js";
import { isNotFound } from "../storage/errors.js";
import { readAll, TooLargeError } from "../storage/streams.js";
import type { Storage } from "../storage/types.js";
import { imageIdOfKey, imageKey, parseImageManifest } from "./manifest.js";
import type { ImageManifest } from "./types.js";

/** An image manifest lists ~1 chunk per 16 KiB of files: 64 MiB covers terabytes. */
const MAX_IMAGE_MANIFEST_BYTES = 64 * 1024 * 1024;

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
