import type { ChromaRest, CollectionInfo } from "../chroma/rest.js";
import type { Storage } from "../storage/types.js";
import { readCatalog } from "./catalog.js";
import { Chunker } from "./chunker.js";
import { FORMAT_VERSION, manifestKey, newSnapshotId, serializeManifest, type ChunkRef, type CollectionEntry, type Manifest } from "./manifest.js";
import type { ManifestKeys } from "./signing.js";
import { recordDigests } from "./records.js";
import { describeDrop } from "./drop.js";
import { unchangedFrom } from "./unchanged.js";
import { SAFETY_TAG } from "../retention.js";
import { PreviousIndex } from "./previous-index.js";
import { readCollection, type ReadCounts } from "./read-collection.js";
import { selectCollections } from "./select-collections.js";
import { Uploader, type CompressionLevel } from "./uploader.js";
import type { ProgressEvent } from "./progress.js";

export interface SnapshotOptions {
  /** Names of the collections to include; all when omitted. */
  collections?: string[];
  tag?: string | null;
  onProgress?: (event: ProgressEvent) => void;
  /** Records per read from Chroma. */
  pageSize?: number;
  /** Ids listed per request (a backup lists a collection's ids ahead, then reads records by id). */
  idListSize?: number;
  /** Reads from Chroma in flight at once. */
  readAhead?: number;
  /** A chunk ends at a content-defined boundary once it holds this much... */
  chunkMinBytes?: number;
  /** ...and at this size regardless. */
  chunkMaxBytes?: number;
  uploadConcurrency?: number;
  compressionLevel?: CompressionLevel;
  now?: () => Date;
  /** Runs just before the manifest is written; throwing aborts the commit (e.g. the lock was lost). */
  beforeCommit?: () => Promise<void>;
  /** SNAPSHOT_SIGNING_KEY: signs the manifest, and previous manifests are trusted only when their signature checks. */
  signing?: ManifestKeys;
  /** When the snapshot read duplicates a committed one (unchangedFrom), commit nothing and answer `{ unchanged }`. */
  skipUnchanged?: boolean;
  /**
   * Stops the backup (the caller left, the lock's lease was lost): checked between pages
   * and chunks, and while waiting on uploads; its reason is thrown. Nothing is committed.
   */
  signal?: AbortSignal;
}

/** What takeSnapshot answers instead of a new manifest when nothing changed (`skipUnchanged`). */
export interface Unchanged {
  /** The committed snapshot holding exactly what was read. */
  unchanged: Manifest;
}

export function isUnchanged(taken: Manifest | Unchanged): taken is Unchanged {
  return "unchanged" in taken;
}

/**
 * Takes a snapshot of Chroma into `storage` and commits it by writing the manifest last.
 *
 * Every record is read from Chroma; a record whose digest is already in the previous
 * snapshot of the same collection stays where it is (its chunk is referenced again),
 * and only new or changed records are written, into new chunks. A previous chunk's
 * records that are gone or changed are listed in its `drop`; once fewer than half of a
 * chunk's records are live, its survivors are written afresh (compaction).
 */
export async function takeSnapshot(chroma: ChromaRest, storage: Storage, options: SnapshotOptions & { skipUnchanged: true }): Promise<Manifest | Unchanged>;
export async function takeSnapshot(chroma: ChromaRest, storage: Storage, options?: SnapshotOptions): Promise<Manifest>;
export async function takeSnapshot(chroma: ChromaRest, storage: Storage, options: SnapshotOptions = {}): Promise<Manifest | Unchanged> {
  const now = options.now ?? (() => new Date());
  options.signal?.throwIfAborted();
  const started = now();
  const id = newSnapshotId(started);
  const [version, all, catalog] = await Promise.all([chroma.version().catch(() => null), chroma.listCollections(), readCatalog(storage, options.signing)]);
  const selected = selectCollections(all, options.collections);
  const previous = catalog.snapshots[0] ?? null;
  const known = new Set<string>();
  for (const m of catalog.snapshots) for (const c of m.collections) for (const ref of c.chunks) known.add(ref.hash);

  const uploader = new Uploader(storage, known, options.uploadConcurrency ?? 4, options.compressionLevel, options.signal);
  const warnings: string[] = [];
  // A collection's uploads go on while the next one is read; its entry is completed once they are done.
  const taken: CollectionTaken[] = [];
  for (const collection of selected) {
    options.signal?.throwIfAborted();
    const prevEntry = previous?.collections.find((c) => c.name === collection.name) ?? null;
    taken.push(await snapshotCollection(chroma, collection, prevEntry, storage, uploader, options, warnings));
  }
  await uploader.drain();
  const entries: CollectionEntry[] = [];
  for (const t of taken) entries.push(collectionEntry(t, await Promise.all(t.newChunks)));

  const manifest: Manifest = {
    format: FORMAT_VERSION,
    id,
    createdAt: started.toISOString(),
    durationMs: 0,
    tag: options.tag ?? null,
    chroma: { url: chroma.url, version, tenant: chroma.tenant, database: chroma.database },
    collections: entries,
    records: entries.reduce((n, c) => n + c.records, 0),
    bytes: entries.reduce((n, c) => n + c.bytes, 0),
    newBytes: 0,
    warnings,
  };
  if (options.skipUnchanged) {
    // Every record matched a committed chunk, so nothing new was uploaded (newBytes 0)
    // and skipping the commit leaves no orphan behind.
    const same = unchangedFrom(catalog.snapshots, manifest);
    if (same && uploader.newBytes === 0) return { unchanged: same };
  }
  const latest = manifest.tag === SAFETY_TAG ? null : catalog.snapshots.find((m) => m.tag !== SAFETY_TAG);
  const drop = latest && describeDrop(latest, manifest, options.collections);
  if (drop) warnings.push(drop);
  // The manifest's own size counts as new bytes: serialize until the figure it states
  // matches its length (a changed digit count settles within a pass or two).
  manifest.durationMs = Math.max(0, now().getTime() - started.getTime());
  let bytes = await serializeManifest(manifest, options.signing);
  while (manifest.newBytes !== uploader.newBytes + bytes.byteLength) {
    manifest.newBytes = uploader.newBytes + bytes.byteLength;
    bytes = await serializeManifest(manifest, options.signing);
  }
  options.signal?.throwIfAborted();
  await options.beforeCommit?.();
  options.signal?.throwIfAborted();
  await storage.put(manifestKey(id), bytes);
  return manifest;
}

/** One collection read; its new chunks may still be uploading. */
interface CollectionTaken {
  collection: CollectionInfo;
  dimension: number;
  counts: ReadCounts;
  /** The previous chunks it references again (its PreviousIndex, ~30 bytes a record, is not kept past the read). */
  keptRefs: ChunkRef[];
  newChunks: Promise<ChunkRef>[];
}

/**
 * The pipeline of one collection: Chroma's pages (readCollection) -> records the previous
 * snapshot does not hold (PreviousIndex) -> chunks (Chunker) -> uploads (Uploader).
 * Memory holds a few pages and chunks, and a few dozen bytes per record.
 */
async function snapshotCollection(
  chroma: ChromaRest,
  collection: CollectionInfo,
  prevEntry: CollectionEntry | null,
  storage: Storage,
  uploader: Uploader,
  options: SnapshotOptions,
  warnings: string[],
): Promise<CollectionTaken> {
  const [previous, recordsAtStart] = await Promise.all([PreviousIndex.load(storage, prevEntry, options.signing?.enabled ?? false), chroma.count(collection.id)]);
  const counts: ReadCounts = { atStart: recordsAtStart, atEnd: recordsAtStart, read: 0 };
  const chunker = new Chunker(options.chunkMinBytes ?? 1024 * 1024, options.chunkMaxBytes ?? 8 * 1024 * 1024);
  const newChunks: Promise<ChunkRef>[] = [];
  let dimension = collection.dimension ?? 0;
  let bytesRead = 0;
  const pages = readCollection(chroma, collection.id, {
    // Records are read by id, so bigger pages save little more than requests, and memory holds a few of them.
    pageSize: options.pageSize ?? 500,
    listSize: options.idListSize ?? 10_000,
    readAhead: Math.max(1, options.readAhead ?? 2),
    signal: options.signal,
  }, counts);

  for await (const page of pages) {
    if (page.ids.length === 0) continue;
    if (dimension === 0) dimension = page.dim;
    const digests = recordDigests(page);
    for (let i = 0; i < page.ids.length; i++) {
      if (previous.claim(digests, i)) continue; // unchanged: its chunk is referenced again
      const chunk = chunker.push(page, digests, i);
      if (!chunk) continue;
      await uploader.room();
      newChunks.push(uploader.upload(chunk));
    }
    bytesRead += page.embeddings.byteLength;
    options.onProgress?.({ collection: collection.name, records: counts.read, totalRecords: recordsAtStart, bytes: bytesRead });
  }
  const last = chunker.flush();
  if (last) {
    await uploader.room();
    newChunks.push(uploader.upload(last));
  }

  if (counts.atEnd !== recordsAtStart || counts.read !== counts.atEnd) {
    warnings.push(`collection ${collection.name} changed during the backup: ${recordsAtStart} records at the start, ${counts.atEnd} at the end, ${counts.read} read`);
  }
  return { collection, dimension, counts, keptRefs: previous.keptRefs(), newChunks };
}

/** The manifest's entry for a collection read, once its new chunks are stored: the previous chunks it keeps, then the new ones. */
function collectionEntry({ collection, dimension, counts, keptRefs }: CollectionTaken, newRefs: ChunkRef[]): CollectionEntry {
  const refs = [...keptRefs, ...newRefs];
  return {
    name: collection.name,
    id: collection.id,
    metadataJson: collection.metadataJson,
    configurationJson: collection.configurationJson,
    ...(collection.schemaJson !== null ? { schemaJson: collection.schemaJson } : {}),
    dimension: dimension || null,
    records: refs.reduce((n, ref) => n + ref.records - (ref.drop?.length ?? 0), 0),
    recordsAtStart: counts.atStart,
    recordsAtEnd: counts.atEnd,
    bytes: refs.reduce((n, ref) => n + ref.bytes, 0),
    chunks: refs,
  };
}
