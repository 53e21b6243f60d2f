import { Buffer } from "node:buffer";
import type { ChromaRest, CollectionInfo } from "../chroma/rest.js";
import { ResponseBuffers } from "../chroma/response-buffers.js";
import { JsonColumn } from "../json/json-column.js";
import { InvalidRequestError } from "../errors.js";
import { isNotFound, StorageError } from "../storage/errors.js";
import { readAll, TooLargeError } from "../storage/streams.js";
import type { ObjectStat, Storage } from "../storage/types.js";
import { readCatalog, forEachLimited } from "./catalog.js";
import { chunkKey, decodeDigests, digestsKey, encodeChunk, encodeDigests, sha256Hex } from "./chunk.js";
import { FORMAT_VERSION, manifestKey, newSnapshotId, serializeManifest, type ChunkRef, type CollectionEntry, type Manifest } from "./manifest.js";
import type { ManifestKeys } from "./signing.js";
import { concatBatches, recordDigests, sliceBatch, type RecordBatch } from "./records.js";
import { isAsideCollection } from "./aside.js";
import { describeDrop } from "./drop.js";
import { unchangedFrom } from "./unchanged.js";
import { SAFETY_TAG } from "../retention.js";

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
  compressionLevel?: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
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
 * Deflate level for the text sections. Measured on the benchmark's text (BENCHMARKS.md):
 * 2 (with zlib's largest hash table) takes 95 ms and 3.94 MB, 4 takes 135-180 ms and
 * 3.65 MB, 6 245-270 ms and 3.48 MB; the backup is CPU-bound, and the text is an eighth
 * of a snapshot.
 */
const DEFAULT_COMPRESSION_LEVEL = 2;
/** A previous chunk whose records are dropped once fewer than this share of them is still live. */
const COMPACT_BELOW_LIVE_FRACTION = 0.5;
/** Listings of a collection's ids after the first, to catch records a concurrent delete shifted past it. */
const CATCH_UP_PASSES = 3;
/** One record in `BOUNDARY_ODDS` (by a hash of its id) may end a chunk. */
const BOUNDARY_ODDS = 64;

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

  const uploader = new Uploader(storage, known, options.uploadConcurrency ?? 4, options.signal);
  const entries: CollectionEntry[] = [];
  const warnings: string[] = [];
  // Each collection's entry is completed once its chunks are written: the reads of the
  // next collection go on meanwhile.
  const finishers: (() => CollectionEntry)[] = [];
  for (const collection of selected) {
    options.signal?.throwIfAborted();
    const prevEntry = previous?.collections.find((c) => c.name === collection.name) ?? null;
    finishers.push(await snapshotCollection(chroma, collection, prevEntry, storage, uploader, options, warnings));
  }
  await uploader.drain();
  for (const finish of finishers) entries.push(finish());

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

function selectCollections(all: CollectionInfo[], names: string[] | undefined): CollectionInfo[] {
  // A restore in progress (or one that died) builds collections aside: not data to keep.
  if (!names) return all.filter((c) => !isAsideCollection(c.name)).sort((a, b) => a.name.localeCompare(b.name));
  const missing = names.filter((n) => !all.some((c) => c.name === n));
  if (missing.length > 0) throw new InvalidRequestError(`no such collection in Chroma: ${missing.join(", ")}`, { missing });
  return names.map((n) => all.find((c) => c.name === n)!);
}

/** Where each record of the previous snapshot lives, by digest. */
interface PreviousIndex {
  refs: ChunkRef[];
  /** Per usable ref: which of its records this snapshot still has. */
  kept: (Uint8Array | null)[];
  byDigest: Map<string, { ref: number; index: number }>;
}

/**
 * A sidecar is trusted when the previous manifest binds it (`digests`: its sha256) or,
 * for refs written before that field existed, on its own checksum, except when
 * manifests are signed: then only a bound sidecar is trusted, since an unbound one is
 * exactly what someone with write access could forge to make a backup reuse old records.
 */
async function indexPrevious(storage: Storage, prev: CollectionEntry | null, signed: boolean): Promise<PreviousIndex> {
  const refs = prev?.chunks ?? [];
  const index: PreviousIndex = { refs, kept: refs.map(() => null), byDigest: new Map() };
  await forEachLimited(refs, 8, async (ref, r) => {
    const drop = new Set(ref.drop ?? []);
    if (ref.records - drop.size < ref.records * COMPACT_BELOW_LIVE_FRACTION) return;
    if (signed && !ref.digests) return;
    let digests: Uint8Array | null = null;
    try {
      const sidecar = await readAll(await storage.get(digestsKey(ref.hash)), 8 + ref.records * 16 + 32);
      if (!ref.digests || sha256Hex(sidecar) === ref.digests) digests = decodeDigests(sidecar, ref.records);
    } catch (err) {
      if (!isNotFound(err) && !(err instanceof TooLargeError)) throw err;
    }
    if (!digests) return; // no usable sidecar: this chunk's records are written afresh
    index.kept[r] = new Uint8Array(ref.records);
    for (let i = 0; i < ref.records; i++) {
      if (!drop.has(i)) index.byDigest.set(digestKey(digests, i), { ref: r, index: i });
    }
  });
  return index;
}

async function snapshotCollection(
  chroma: ChromaRest,
  collection: CollectionInfo,
  prevEntry: CollectionEntry | null,
  storage: Storage,
  uploader: Uploader,
  options: SnapshotOptions,
  warnings: string[],
): Promise<() => CollectionEntry> {
  const [previous, recordsAtStart] = await Promise.all([indexPrevious(storage, prevEntry, options.signing?.enabled ?? false), chroma.count(collection.id)]);
  // Records are read by id (pagesByIds), so bigger pages save little more than requests,
  // and memory holds a few of them.
  const pageSize = options.pageSize ?? 500;
  const chunker = new Chunker(options.chunkMinBytes ?? 1024 * 1024, options.chunkMaxBytes ?? 8 * 1024 * 1024);
  const newRefs: (ChunkRef | null)[] = [];
  const seen = new Set<string>();
  let dim = collection.dimension ?? 0;
  let bytesRead = 0;

  // Chunks are encoded and uploaded in the background (a few at a time, see Uploader);
  // each keeps its place in the manifest.
  const emit = (batch: RecordBatch, digests: Uint8Array) => {
    const slot = newRefs.push(null) - 1;
    return uploader.add(async () => {
      const encoded = await encodeChunk(batch, options.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL);
      const hash = sha256Hex(encoded.bytes);
      const sidecar = encodeDigests(digests);
      newRefs[slot] = { hash, records: encoded.records, bytes: encoded.bytes.byteLength, decodedBytes: encoded.decodedBytes, digests: sha256Hex(sidecar) };
      return { hash, bytes: encoded.bytes, sidecar };
    });
  };

  // Pages are requested `readAhead` at a time, so Chroma serves the next ones while this
  // one is hashed, encoded and uploaded.
  const readAhead = Math.max(1, options.readAhead ?? 2);
  const listSize = options.idListSize ?? 10_000;
  const buffers = new ResponseBuffers();
  const absorb = async (page: RecordBatch) => {
    options.signal?.throwIfAborted();
    if (page.ids.length === 0) return;
    if (dim === 0) dim = page.dim;
    const digests = recordDigests(page);
    for (let i = 0; i < page.ids.length; i++) {
      const id = page.ids[i]!;
      if (seen.has(id)) continue; // listed twice: writes shifted the listing's offsets
      seen.add(id);
      const prev = previous.byDigest.size > 0 ? previous.byDigest.get(digestKey(digests, i)) : undefined;
      if (prev) {
        previous.kept[prev.ref]![prev.index] = 1;
        continue;
      }
      const full = chunker.push(page, digests, i);
      if (full) await emit(full.batch, full.digests);
    }
    bytesRead += page.embeddings.byteLength;
    options.onProgress?.({ collection: collection.name, records: seen.size, totalRecords: recordsAtStart, bytes: bytesRead });
  };

  const nextPage = pagesByIds(chroma, collection.id, pageSize, listSize, buffers);
  const pending: Promise<Page>[] = [];
  const request = () => {
    const page = nextPage();
    page.catch(() => {}); // a failure surfaces when awaited
    pending.push(page);
  };
  for (let i = 0; i < readAhead; i++) request();
  while (pending.length > 0) {
    const { batch, last } = await untilAborted(pending.shift()!, options.signal);
    if (!last) request();
    else pending.length = 0; // pages past the end are empty
    await absorb(batch); // empty at the end, or when its records were deleted since they were listed
  }

  // The ids are listed by offset, so records deleted during the listing shift later ones
  // past it, and those are missed. When the count moved, the ids are listed again and any
  // not read yet are read, until a pass sees the count hold (a few passes at most).
  let countBefore = recordsAtStart;
  let recordsAtEnd = await chroma.count(collection.id);
  for (let pass = 0; pass < CATCH_UP_PASSES && (recordsAtEnd !== countBefore || seen.size !== recordsAtEnd); pass++) {
    const missed: string[] = [];
    for (let offset = 0; ; offset += listSize) {
      const ids = await chroma.listIds(collection.id, offset, listSize);
      for (const id of ids) if (!seen.has(id)) missed.push(id);
      if (ids.length < listSize) break;
    }
    for (let i = 0; i < missed.length; i += pageSize) await absorb(await chroma.getRecordsByIds(collection.id, missed.slice(i, i + pageSize), buffers));
    countBefore = recordsAtEnd;
    recordsAtEnd = await chroma.count(collection.id);
    if (missed.length === 0 && recordsAtEnd === countBefore) break;
  }
  const last = chunker.flush();
  if (last) await emit(last.batch, last.digests);

  if (recordsAtEnd !== recordsAtStart || seen.size !== recordsAtEnd) {
    warnings.push(
      `collection ${collection.name} changed during the backup: ${recordsAtStart} records at the start, ${recordsAtEnd} at the end, ${seen.size} read`,
    );
  }

  return () => {
    const refs: ChunkRef[] = [];
    previous.refs.forEach((ref, r) => {
      const kept = previous.kept[r];
      if (!kept) return;
      const drop: number[] = [];
      for (let i = 0; i < ref.records; i++) if (!kept[i]) drop.push(i);
      if (drop.length === ref.records) return;
      const { hash, records, bytes, decodedBytes, digests } = ref;
      refs.push({ hash, records, bytes, decodedBytes, ...(digests ? { digests } : {}), ...(drop.length > 0 ? { drop } : {}) });
    });
    refs.push(...(newRefs as ChunkRef[]));
    return {
      name: collection.name,
      id: collection.id,
      metadataJson: collection.metadataJson,
      configurationJson: collection.configurationJson,
      ...(collection.schemaJson !== null ? { schemaJson: collection.schemaJson } : {}),
      dimension: dim || null,
      records: refs.reduce((n, ref) => n + ref.records - (ref.drop?.length ?? 0), 0),
      recordsAtStart,
      recordsAtEnd,
      bytes: refs.reduce((n, ref) => n + ref.bytes, 0),
      chunks: refs,
    };
  };
}

interface Page {
  batch: RecordBatch;
  /** No page follows. */
  last: boolean;
}

/**
 * Pages of records by id: the ids are listed ahead, `listSize` at a time, and each page
 * of records is fetched by its ids. Fetching by offset costs Chroma more the further into
 * a collection a page is; by ids it does not (50,000 records: 3.6-4.0 against 4.4-4.7 s,
 * BENCHMARKS.md), and the records come in the same order. Calls queue on `listing`, so
 * each takes the next ids.
 */
function pagesByIds(chroma: ChromaRest, id: string, pageSize: number, listSize: number, buffers: ResponseBuffers): () => Promise<Page> {
  let listed: string[] = [];
  let next = 0; // the first id of `listed` not taken yet
  let listOffset = 0;
  let listEnded = false;
  let listing: Promise<unknown> = Promise.resolve();
  const take = async (): Promise<{ ids: string[]; last: boolean }> => {
    while (listed.length - next < pageSize && !listEnded) {
      const more = await chroma.listIds(id, listOffset, listSize);
      listOffset += listSize;
      listEnded = more.length < listSize;
      listed = next === listed.length ? more : listed.slice(next).concat(more);
      next = 0;
    }
    const ids = listed.slice(next, next + pageSize);
    next += ids.length;
    return { ids, last: listEnded && next === listed.length };
  };
  return async () => {
    const taken = listing.then(take);
    listing = taken.catch(() => {});
    const { ids, last } = await taken;
    return { batch: ids.length > 0 ? await chroma.getRecordsByIds(id, ids, buffers) : EMPTY_PAGE, last };
  };
}

const EMPTY_PAGE: RecordBatch = { ids: [], dim: 0, embeddings: new Float32Array(0), documents: JsonColumn.empty, uris: [], metadatas: [] };

/** Record `i`'s 16-byte digest as a map key. */
function digestKey(digests: Uint8Array, i: number): string {
  return Buffer.from(digests.buffer, digests.byteOffset + i * 16, 16).toString("latin1");
}

/** FNV-1a over a string's UTF-16 code units: a cheap, stable hash (chunk boundaries from ids). */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Groups new records into chunks with content-defined boundaries: after `minBytes`, a
 * chunk ends at the first record whose id hashes to a boundary, so the same records cut
 * the same way in any snapshot; `maxBytes` caps it. Holds at most one chunk of records.
 */
class Chunker {
  private parts: RecordBatch[] = [];
  private digestParts: Uint8Array[] = [];
  // The run of consecutive records of one page being added: [runStart, runEnd).
  private runPage: RecordBatch | null = null;
  private runDigests: Uint8Array | null = null;
  private runStart = 0;
  private runEnd = 0;
  private bytes = 0;

  constructor(
    private readonly minBytes: number,
    private readonly maxBytes: number,
  ) {}

  /** Adds record `i` of `page` (`digests`: the page's record digests). */
  push(page: RecordBatch, digests: Uint8Array, i: number): { batch: RecordBatch; digests: Uint8Array } | null {
    if (this.runPage !== page || this.runEnd !== i) this.closeRun(page, digests, i);
    this.runEnd = i + 1;
    this.bytes += page.dim * 4 + page.ids[i]!.length + page.documents.textLength(i) + (page.uris[i]?.length ?? 0) + page.metadatas[i]!.length + 16;
    const boundary = this.bytes >= this.maxBytes || (this.bytes >= this.minBytes && fnv1a(page.ids[i]!) % BOUNDARY_ODDS === 0);
    return boundary ? this.flush() : null;
  }

  flush(): { batch: RecordBatch; digests: Uint8Array } | null {
    this.closeRun(null, null, 0);
    if (this.parts.length === 0) return null;
    // Runs are views into their pages until here, where they are copied once (a chunk of
    // one run stays a view of its page).
    const batch = concatBatches(this.parts);
    const digests = new Uint8Array(this.digestParts.reduce((n, d) => n + d.byteLength, 0));
    let o = 0;
    for (const d of this.digestParts) {
      digests.set(d, o);
      o += d.byteLength;
    }
    this.parts = [];
    this.digestParts = [];
    this.bytes = 0;
    return { batch, digests };
  }

  private closeRun(page: RecordBatch | null, digests: Uint8Array | null, start: number): void {
    if (this.runPage && this.runEnd > this.runStart) {
      this.parts.push(sliceBatch(this.runPage, this.runStart, this.runEnd));
      this.digestParts.push(this.runDigests!.subarray(this.runStart * 16, this.runEnd * 16));
    }
    this.runPage = page;
    this.runDigests = digests;
    this.runStart = start;
    this.runEnd = start;
  }
}

/**
 * Uploads chunks with bounded concurrency (so memory holds a few chunks at most), skips
 * chunks the store already holds intact, and counts the bytes it really wrote.
 */
class Uploader {
  newBytes = 0;
  private inflight = new Set<Promise<void>>();
  private failure: { error: unknown } | null = null;

  constructor(
    private readonly storage: Storage,
    private readonly known: Set<string>,
    private readonly limit: number,
    private readonly signal?: AbortSignal,
  ) {}

  /** Waits for a free slot, then encodes (`encode`) and stores one chunk in the background. */
  async add(encode: () => Promise<{ hash: string; bytes: Uint8Array; sidecar: Uint8Array }>): Promise<void> {
    while (this.inflight.size >= this.limit) await untilAborted(Promise.race(this.inflight), this.signal);
    this.signal?.throwIfAborted();
    if (this.failure) throw this.failure.error;
    const task = (async () => {
      const { hash, bytes, sidecar } = await encode();
      if (this.known.has(hash)) return;
      this.known.add(hash);
      await this.store(hash, bytes, sidecar);
    })().catch((error: unknown) => {
      this.failure ??= { error };
    });
    const tracked = task.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  async drain(): Promise<void> {
    await untilAborted(Promise.all(this.inflight), this.signal);
    this.signal?.throwIfAborted();
    if (this.failure) throw this.failure.error;
  }

  /** Content-addressed, so every call here is safe to repeat (the store retries transient failures). */
  private async store(hash: string, bytes: Uint8Array, sidecar: Uint8Array): Promise<void> {
    this.signal?.throwIfAborted();
    const key = chunkKey(hash);
    const intact = await this.holdsIntact(key, bytes.byteLength);
    if (!intact) {
      this.signal?.throwIfAborted();
      await this.storage.put(key, bytes);
      // Cheap insurance against a driver that reports success for a short object: the
      // manifest must never name a chunk the store does not hold whole.
      const stored = await this.storage.head(key);
      if (stored.size !== bytes.byteLength) {
        throw new StorageError(`${this.storage.driver}: put "${key}" stored ${stored.size} bytes of ${bytes.byteLength}`, {
          driver: this.storage.driver,
          operation: "put",
          key,
          retryable: true,
          kind: "unavailable",
        });
      }
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

/**
 * Waits for `promise`, or rejects with the signal's reason as soon as it aborts: an
 * abandoned backup does not wait for a hung upload to time out (the upload goes on in
 * the background, and nothing it writes is ever referenced).
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err as Error);
      },
    );
  });
}
