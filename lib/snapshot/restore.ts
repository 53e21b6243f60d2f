import type { ChromaRest, CollectionInfo } from "../chroma/rest.js";
import { jsonLogger, type Logger } from "../log.js";
import { InvalidRequestError, NotFoundError, SnapshotCorruptError } from "../errors.js";
import type { Storage } from "../storage/types.js";
import { checkCollections, probeTarget, schemaWarnings, type TargetCapabilities } from "./compatibility.js";
import { ASIDE_STALE_MS, asideName, buildingAside, sweepAsideCollections } from "./aside.js";
import type { ProgressEvent } from "./progress.js";
import type { CollectionEntry, Manifest } from "./manifest.js";
import { readChunk } from "./read-chunk.js";
import { writeRecords } from "./write-records.js";
import { findMisfits, refuseMisfits, targetLimits, type TargetLimitSettings } from "./target-limits.js";

export interface RestoreOptions {
  /** Collections of the snapshot to restore; all when omitted. */
  collections?: string[];
  /** Restore a collection under another name: `{ from: to }`. */
  rename?: Record<string, string>;
  /** `replace`: the collection is rebuilt to hold exactly the snapshot. `merge`: upsert into what is there. */
  mode?: "replace" | "merge";
  onProgress?: (event: ProgressEvent) => void;
  /** Chunks downloaded and decoded ahead of the writes. */
  prefetch?: number;
  /** add/upsert requests in flight at once. */
  writeConcurrency?: number;
  /** CHROMA_TARGET_LIMITS; the target's limits (Chroma Cloud's quotas on Cloud) cap writeConcurrency and the batch size. */
  limits?: TargetLimitSettings;
  /** Records per add/upsert (default: what the target's pre-flight check allows). */
  batchSize?: number;
  /** Where the sweep of collections left aside is logged (default: JSON lines). */
  log?: Logger;
  /** Stops the restore (the caller left): checked between chunks and batches; a replace leaves the live collection as it was. */
  signal?: AbortSignal;
}

export interface RestoredCollection {
  name: string;
  from: string;
  records: number;
  /** Settings of the snapshot the target could not take (e.g. schema on a Chroma before 1.2). */
  warnings: string[];
}

/** Which collections a restore touches, under which names; checks the request first. */
export function planRestore(manifest: Manifest, options: Pick<RestoreOptions, "collections" | "rename">): { entry: CollectionEntry; target: string }[] {
  const names = options.collections ?? manifest.collections.map((c) => c.name);
  const missing = names.filter((n) => !manifest.collections.some((c) => c.name === n));
  if (missing.length > 0) throw new NotFoundError(`snapshot ${manifest.id} has no collection ${missing.join(", ")}`, { missing });
  const rename = options.rename ?? {};
  const unknownRenames = Object.keys(rename).filter((n) => !names.includes(n));
  if (unknownRenames.length > 0) throw new InvalidRequestError(`rename names collections that are not being restored: ${unknownRenames.join(", ")}`);
  const plan = names.map((n) => ({ entry: manifest.collections.find((c) => c.name === n)!, target: rename[n] ?? n }));
  const targets = new Set(plan.map((p) => p.target));
  if (targets.size !== plan.length) throw new InvalidRequestError("two collections would be restored under the same name");
  return plan;
}

/**
 * Restores collections of a snapshot into Chroma.
 *
 * `replace` builds each collection aside under a temporary name and swaps it in only
 * when every chunk verified and the record count matches: a corrupt chunk or a failure
 * half way leaves the existing collection as it was. `merge` first verifies every chunk
 * of the collection (so nothing is written from a damaged snapshot), then upserts.
 */
export async function restoreSnapshot(chroma: ChromaRest, storage: Storage, manifest: Manifest, options: RestoreOptions = {}): Promise<RestoredCollection[]> {
  const plan = planRestore(manifest, options);
  const restored: RestoredCollection[] = [];
  if ((options.mode ?? "replace") === "replace") {
    // What a restore that died left aside: its own targets' at any age, the others' once
    // they are too old to be another instance's restore in progress.
    await sweepAsideCollections(chroma, options.log ?? jsonLogger, { olderThanMs: ASIDE_STALE_MS, targets: plan.map((p) => p.target) });
  }
  // Every collection is checked against what the target can hold before any is replaced.
  const capabilities = await probeTarget(chroma);
  await checkCollections(storage, plan.map((p) => p.entry), capabilities);
  const limits = await targetLimits(chroma, options.limits);
  refuseMisfits(await findMisfits(storage, plan, limits, options.signal), limits.cloud);
  options = { ...options, batchSize: Math.min(options.batchSize ?? Infinity, limits.recordsPerWrite), writeConcurrency: Math.min(options.writeConcurrency ?? 2, limits.concurrentWrites ?? Infinity) };
  for (const { entry, target } of plan) {
    options.signal?.throwIfAborted();
    const created = (options.mode ?? "replace") === "merge" ? await mergeCollection(chroma, storage, entry, target, capabilities, options) : await replaceCollection(chroma, storage, entry, target, capabilities, options);
    const warnings = created ? schemaWarnings(target, entry, created, capabilities) : [];
    for (const w of warnings) (options.log ?? jsonLogger)("warn", w, { collection: target, snapshot: manifest.id });
    restored.push({ name: target, from: entry.name, records: entry.records, warnings });
  }
  return restored;
}

/** Creates a collection as the snapshot describes it: with its schema where the target has schema, else with its configuration. */
function createAsInSnapshot(chroma: ChromaRest, name: string, entry: CollectionEntry, capabilities: TargetCapabilities): Promise<CollectionInfo> {
  return chroma.createCollection(name, entry.metadataJson, entry.configurationJson, capabilities.schema ? (entry.schemaJson ?? null) : null);
}

/** The collection as created (null when merge found it existing). */
async function replaceCollection(chroma: ChromaRest, storage: Storage, entry: CollectionEntry, target: string, capabilities: TargetCapabilities, options: RestoreOptions): Promise<CollectionInfo> {
  const name = asideName(target);
  return buildingAside(name, () => buildAndSwap(chroma, storage, entry, target, name, capabilities, options));
}

async function buildAndSwap(chroma: ChromaRest, storage: Storage, entry: CollectionEntry, target: string, name: string, capabilities: TargetCapabilities, options: RestoreOptions): Promise<CollectionInfo> {
  const aside = await createAsInSnapshot(chroma, name, entry, capabilities);
  try {
    await writeRecords(chroma, storage, entry, aside, "add", options);
    options.signal?.throwIfAborted(); // the last moment to leave the live collection untouched
    const count = await chroma.count(aside.id);
    if (count !== entry.records) {
      // Every chunk decoded with the counts the manifest claims: most likely records overlap (an id in two chunks).
      throw new SnapshotCorruptError(`collection ${entry.name}: Chroma holds ${count} records after the restore, the snapshot has ${entry.records}`, null, entry.name);
    }
    await chroma.deleteCollection(target);
    await chroma.renameCollection(aside.id, target);
    return aside;
  } catch (err) {
    await chroma.deleteCollection(aside.name).catch(() => {});
    throw err;
  }
}

async function mergeCollection(chroma: ChromaRest, storage: Storage, entry: CollectionEntry, target: string, capabilities: TargetCapabilities, options: RestoreOptions): Promise<CollectionInfo | null> {
  // Decoded, not only checksummed: a chunk that fails to decode must fail before anything is created or written.
  for (const ref of entry.chunks) {
    options.signal?.throwIfAborted();
    await readChunk(storage, ref, entry.name, entry.dimension);
  }
  const found = await chroma.getCollection(target);
  const existing = found ?? (await createAsInSnapshot(chroma, target, entry, capabilities));
  await writeRecords(chroma, storage, entry, existing, "upsert", options);
  return found ? null : existing;
}
