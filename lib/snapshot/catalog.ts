import { NotFoundError, SnapshotCorruptError } from "../errors.js";
import { isNotFound } from "../storage/errors.js";
import { readAll, TooLargeError } from "../storage/streams.js";
import type { Storage } from "../storage/types.js";
import { isSnapshotId, manifestKey, parseManifest, type Manifest } from "./manifest.js";
import type { ManifestKeys } from "./signing.js";
import { forEachLimited } from "../concurrency.js";

/** Manifests are small; a bigger one is not ours. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

/** The ids of committed snapshots (those whose manifest exists), unordered. */
export async function listSnapshotIds(storage: Storage): Promise<string[]> {
  const ids: string[] = [];
  for await (const info of storage.list("snapshots/")) {
    const match = /^snapshots\/(.+)\.json$/.exec(info.key);
    if (match && isSnapshotId(match[1]!)) ids.push(match[1]!);
  }
  return ids;
}

/**
 * Reads and checks one manifest. Unknown id: NotFoundError; damaged: SnapshotCorruptError,
 * when three reads fail the checks (a read cut short on the way is not damage). Transient
 * failures are retried by the store (retryingStorage). With `keys` (SNAPSHOT_SIGNING_KEY) its signature is checked too.
 */
export async function readManifest(storage: Storage, id: string, keys?: ManifestKeys): Promise<Manifest> {
  for (let read = 0; ; read++) {
    let bytes: Uint8Array;
    try {
      bytes = await readAll(await storage.get(manifestKey(id)), MAX_MANIFEST_BYTES);
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`no snapshot ${id}`);
      if (err instanceof TooLargeError) throw new SnapshotCorruptError(`manifest of snapshot ${id} is larger than ${MAX_MANIFEST_BYTES} bytes`, null, null);
      throw err;
    }
    try {
      return await parseManifest(bytes, id, keys);
    } catch (err) {
      if (read >= 2 || !(err instanceof SnapshotCorruptError)) throw err;
    }
  }
}

export interface Catalog {
  /** Newest first. */
  snapshots: Manifest[];
  /** Manifests that failed their checks; never used, always reported. */
  damaged: { id: string; error: string }[];
}

export async function readCatalog(storage: Storage, keys?: ManifestKeys): Promise<Catalog> {
  const ids = await listSnapshotIds(storage);
  const snapshots: Manifest[] = [];
  const damaged: Catalog["damaged"] = [];
  await forEachLimited(ids, 8, async (id) => {
    try {
      snapshots.push(await readManifest(storage, id, keys));
    } catch (err) {
      if (err instanceof SnapshotCorruptError) damaged.push({ id, error: err.message });
      else if (!(err instanceof NotFoundError)) throw err; // deleted while listing: gone
    }
  });
  snapshots.sort(newestFirst);
  return { snapshots, damaged };
}

export function newestFirst(a: Manifest, b: Manifest): number {
  return a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}
