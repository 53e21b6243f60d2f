import type { Storage } from "./storage/types.js";
import { planImagePrune } from "./images/catalog.js";
import { readCatalog } from "./snapshot/catalog.js";
import { chunkKey, digestsKey } from "./snapshot/chunk.js";
import { manifestKey } from "./snapshot/manifest.js";
import type { ManifestKeys } from "./snapshot/signing.js";
import { applyRetention, type RetentionRules } from "./retention.js";

export interface PruneOptions {
  dryRun?: boolean;
  /** At most this many snapshots deleted in this call (oldest first); the rest wait. */
  limit?: number;
  /**
   * Unreferenced chunks younger than this (seconds) are left alone: they may belong to a
   * backup still writing. Default: 3600 for a dry run, 0 otherwise (see below).
   */
  graceSeconds?: number;
  now?: () => Date;
  /** SNAPSHOT_SIGNING_KEY: a manifest without a valid signature counts as damaged. */
  keys?: ManifestKeys;
  /**
   * IMAGE_KEEP: the newest restore images kept (planImagePrune); default all. An image
   * whose snapshot this prune removes goes too (catch-up starts from that snapshot).
   */
  imageKeep?: number;
}

export interface PruneResult {
  dryRun: boolean;
  kept: string[];
  deleted: string[];
  chunksDeleted: number;
  bytesFreed: number;
  remaining: number;
  /** Snapshot ids of the restore images deleted. */
  imagesDeleted: string[];
  warnings: string[];
}

/**
 * Forgets the snapshots no rule keeps, then sweeps chunks (and their digest sidecars)
 * that no remaining snapshot references. The caller holds the store lock. A dry run
 * makes exactly the same choices and reports them, deleting nothing.
 */
export async function prune(storage: Storage, rules: RetentionRules, options: PruneOptions = {}): Promise<PruneResult> {
  const now = (options.now ?? (() => new Date()))();
  const dryRun = options.dryRun ?? false;
  const catalog = await readCatalog(storage, options.keys);
  const decision = applyRetention(catalog.snapshots, rules, now);
  // Oldest first, so a limited run frees the oldest snapshots first.
  const forget = [...decision.forget].reverse();
  const deleting = options.limit === undefined ? forget : forget.slice(0, options.limit);
  const deletingIds = new Set(deleting.map((m) => m.id));
  const warnings: string[] = [];

  if (!dryRun) for (const m of deleting) await storage.delete(manifestKey(m.id));

  const referenced = new Set<string>();
  for (const m of catalog.snapshots) if (!deletingIds.has(m.id)) for (const c of m.collections) for (const ref of c.chunks) referenced.add(ref.hash);
  // Images share the chunk space: the kept ones' chunks are referenced too.
  const remainingIds = [...catalog.snapshots.filter((m) => !deletingIds.has(m.id)).map((m) => m.id), ...catalog.damaged.map((d) => d.id)];
  const images = await planImagePrune(storage, options.imageKeep ?? Infinity, { dryRun, keys: options.keys, snapshots: remainingIds });
  for (const image of images.kept) for (const f of image.files) for (const ref of f.chunks) referenced.add(ref.hash);

  let chunksDeleted = 0;
  let bytesFreed = 0;
  if (catalog.damaged.length > 0) {
    // A damaged manifest's chunk list is unknown: sweeping could delete what it needs.
    warnings.push(`chunk sweep skipped: ${catalog.damaged.length} damaged manifest(s): ${catalog.damaged.map((d) => d.id).join(", ")}`);
  } else {
    // A real run holds the store lock (BackupService.prune, and the retention run inside
    // BackupService.backup, after its manifest is written): no backup can be uploading, so
    // an unreferenced chunk is an orphan of a failed backup (a full disk's, say) and goes
    // whatever its age. A dry run takes no lock: a backup may be writing chunks its
    // manifest does not name yet, so young ones are reported as kept.
    const cutoff = now.getTime() - (options.graceSeconds ?? (dryRun ? 3600 : 0)) * 1000;
    for (const prefix of ["chunks/", "digests/"]) {
      const isChunk = prefix === "chunks/";
      for await (const info of storage.list(prefix)) {
        const hash = info.key.slice(info.key.lastIndexOf("/") + 1);
        if (referenced.has(hash)) continue;
        if (info.key !== (isChunk ? chunkKey(hash) : digestsKey(hash))) continue; // not ours
        if (info.lastModified && info.lastModified.getTime() > cutoff) continue;
        if (!dryRun) await storage.delete(info.key);
        if (isChunk) chunksDeleted++;
        bytesFreed += info.size ?? 0;
      }
    }
  }
  return {
    dryRun,
    kept: decision.keep.map((m) => m.id),
    deleted: deleting.map((m) => m.id),
    chunksDeleted,
    bytesFreed,
    remaining: forget.length - deleting.length,
    imagesDeleted: images.deleted,
    warnings,
  };
}
