import type { ChromaRest } from "../chroma/rest.js";
import { SnapshotCorruptError } from "../errors.js";
import { jsonLogger, type Logger } from "../log.js";
import { forEachLimited } from "../concurrency.js";
import type { ChunkRef, CollectionEntry, Manifest } from "../snapshot/manifest.js";
import { readChunk } from "../snapshot/read-chunk.js";
import { filterBatch, sliceBatch, type RecordBatch } from "../snapshot/records.js";
import { restoreSnapshot } from "../snapshot/restore.js";
import type { Storage } from "../storage/types.js";

export interface CatchUpResult {
  /** Records written (replaced: deleted, then added as the newer snapshot has them) into collections caught up record by record. */
  upserted: number;
  /** Records deleted, including those of collections `to` no longer has. */
  deleted: number;
  /** Collections restored logically (new in `to`, or whose settings changed). */
  collectionsRestored: string[];
}

export interface CatchUpOptions {
  signal?: AbortSignal;
  log?: Logger;
}

/** Chunks read (downloaded, checked, decoded) at once within a collection. */
const READ_CONCURRENCY = 3;

/**
 * Brings a Chroma holding exactly snapshot `from` to snapshot `to` through the API, by
 * collection name, touching only the records whose chunks differ: a chunk is unchanged
 * when `to` lists the same hash with the same `drop` (so the same live records).
 * - records live in a chunk of `to` and not live in that chunk in `from` are written as
 *   `to` has them (replaceRecords: deleted, then added);
 * - records live in a chunk of `from` and not live in that chunk in `to` are deleted,
 *   unless `to` upserted the same id (a changed record moves to a new chunk); the count
 *   after the upserts says how many there are, so `from`'s chunks are read (for their
 *   ids) only when some record is really gone;
 * - a collection only in `to` is restored logically, one only in `from` is deleted;
 * - a collection whose metadata, configuration, schema or dimension changed is restored
 *   logically: Chroma cannot change an index's settings in place, and a replace is exact.
 * Every chunk read is checked (readChunk); each caught-up collection's count must then
 * equal `to`'s, else SnapshotCorruptError (the caller falls back to a full restore).
 */
export async function catchUp(chroma: ChromaRest, storage: Storage, from: Manifest, to: Manifest, options: CatchUpOptions = {}): Promise<CatchUpResult> {
  const log = options.log ?? jsonLogger;
  const api = chroma.withSignal(options.signal);
  const result: CatchUpResult = { upserted: 0, deleted: 0, collectionsRestored: [] };
  const fromByName = new Map(from.collections.map((c) => [c.name, c]));
  const toByName = new Map(to.collections.map((c) => [c.name, c]));

  for (const f of from.collections) {
    if (toByName.has(f.name)) continue;
    options.signal?.throwIfAborted();
    await api.deleteCollection(f.name);
    result.deleted += f.records;
    log("info", "catch-up: deleted a collection the newer snapshot does not have", { collection: f.name, records: f.records, from: from.id, to: to.id });
  }

  const restoreLogically: string[] = [];
  for (const t of to.collections) {
    options.signal?.throwIfAborted();
    const f = fromByName.get(t.name);
    const why = !f ? "new in the newer snapshot" : settingsChanged(f, t);
    if (why) {
      restoreLogically.push(t.name);
      log("info", "catch-up: the collection is restored logically", { collection: t.name, reason: why, records: t.records });
      continue;
    }
    const info = await api.getCollection(t.name);
    if (!info) throw new SnapshotCorruptError(`catch-up: collection ${t.name} of snapshot ${from.id} is missing from Chroma`, null, t.name);
    const { upserted, deleted } = await catchUpCollection(api, storage, info.id, f!, t, options.signal);
    result.upserted += upserted;
    result.deleted += deleted;
    const count = await api.count(info.id);
    if (count !== t.records) {
      throw new SnapshotCorruptError(`catch-up: collection ${t.name} holds ${count} records, snapshot ${to.id} has ${t.records}`, null, t.name);
    }
  }
  if (restoreLogically.length > 0) {
    await restoreSnapshot(api, storage, to, { collections: restoreLogically, mode: "replace", log, signal: options.signal });
    result.collectionsRestored = restoreLogically;
  }
  return result;
}

/** How many records catchUp(from, to) writes, from the manifests alone (the RTO estimate's delta). */
export function catchUpRecords(from: Manifest, to: Manifest): number {
  const fromByName = new Map(from.collections.map((c) => [c.name, c]));
  let records = 0;
  for (const t of to.collections) {
    const f = fromByName.get(t.name);
    if (!f || settingsChanged(f, t)) {
      records += t.records;
      continue;
    }
    const fromRefs = new Map(f.chunks.map((r) => [r.hash, r]));
    for (const ref of t.chunks) records += liveOnlyIn(ref, fromRefs.get(ref.hash)).length;
  }
  return records;
}

/** Why the collection must be rebuilt rather than caught up, or null. */
function settingsChanged(f: CollectionEntry, t: CollectionEntry): string | null {
  if (f.metadataJson !== t.metadataJson) return "its metadata changed";
  if (f.configurationJson !== t.configurationJson) return "its configuration changed";
  if ((f.schemaJson ?? null) !== (t.schemaJson ?? null)) return "its schema changed";
  if (f.dimension !== null && t.dimension !== null && f.dimension !== t.dimension) return "its dimension changed";
  return null;
}

/** Indexes a chunk keeps live. */
const liveIn = (ref: ChunkRef | undefined): ((i: number) => boolean) => {
  if (!ref) return () => false;
  const drop = new Set(ref.drop ?? []);
  return (i) => !drop.has(i);
};

/** Indexes `a` keeps live and `b` does not (all of `a`'s live ones when `b` is absent). */
function liveOnlyIn(a: ChunkRef, b: ChunkRef | undefined): number[] {
  const inA = liveIn(a);
  const inB = liveIn(b);
  const out: number[] = [];
  for (let i = 0; i < a.records; i++) if (inA(i) && !inB(i)) out.push(i);
  return out;
}

async function catchUpCollection(chroma: ChromaRest, storage: Storage, id: string, f: CollectionEntry, t: CollectionEntry, signal: AbortSignal | undefined): Promise<{ upserted: number; deleted: number }> {
  const fromRefs = new Map(f.chunks.map((r) => [r.hash, r]));
  const toRefs = new Map(t.chunks.map((r) => [r.hash, r]));
  // Only chunks with records to write or to remove are read: a chunk that merely gained
  // drops (records deleted or changed since) has nothing to upsert.
  const toWrite = t.chunks.map((ref) => ({ ref, indexes: liveOnlyIn(ref, fromRefs.get(ref.hash)) })).filter((w) => w.indexes.length > 0);
  const toRemove = f.chunks.map((ref) => ({ ref, indexes: liveOnlyIn(ref, toRefs.get(ref.hash)) })).filter((w) => w.indexes.length > 0);
  const maxBatch = await chroma.maxBatchSize();
  const written = new Set<string>();
  let upserted = 0;
  await forEachLimited(toWrite, READ_CONCURRENCY, async ({ ref, indexes }) => {
    signal?.throwIfAborted();
    const keep = new Set(indexes);
    const batch = filterBatch(await readChunk(storage, ref, t.name, t.dimension), (i) => keep.has(i));
    for (const recordId of batch.ids) written.add(recordId);
    await writeInBatches(batch, maxBatch, (part) => replaceRecords(chroma, id, part), signal);
    upserted += batch.ids.length;
  });
  // Chroma held exactly `from`, and now also every record written: it holds more than `to`
  // by exactly the records to delete. None (every change an update or an add): no chunk of
  // `from` is read. Else chunks are read for their ids until that many are found.
  const surplus = (await chroma.count(id)) - t.records;
  const gone: string[] = [];
  if (surplus > 0) {
    await forEachLimited(toRemove, READ_CONCURRENCY, async ({ ref, indexes }) => {
      if (gone.length >= surplus) return;
      signal?.throwIfAborted();
      const batch = await readChunk(storage, ref, f.name, f.dimension);
      for (const i of indexes) if (!written.has(batch.ids[i]!)) gone.push(batch.ids[i]!);
    });
  }
  for (let start = 0; start < gone.length; start += maxBatch) {
    signal?.throwIfAborted();
    await chroma.deleteRecords(id, gone.slice(start, start + maxBatch));
  }
  return { upserted, deleted: gone.length };
}

/**
 * Writes records as `to` has them, whether or not Chroma holds their ids: deleted, then
 * added. An upsert would not do: over an existing record Chroma merges, keeping a document,
 * uri or metadata key the newer record no longer has (found by bench/images.ts, where 1%
 * of records were deleted and added back with other content).
 */
async function replaceRecords(chroma: ChromaRest, id: string, part: RecordBatch): Promise<void> {
  await chroma.deleteRecords(id, part.ids);
  await chroma.writeRecords(id, part, "add");
}

async function writeInBatches(batch: RecordBatch, maxBatch: number, write: (part: RecordBatch) => Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  for (let start = 0; start < batch.ids.length; start += maxBatch) {
    signal?.throwIfAborted();
    await write(sliceBatch(batch, start, Math.min(batch.ids.length, start + maxBatch)));
  }
}
