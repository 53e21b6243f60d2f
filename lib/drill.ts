/**
 * Restore drills: a snapshot restored into scratch collections (never the real ones),
 * checked (counts; sampled records are their own nearest neighbour and carry the
 * snapshot's documents and metadata), then removed, whatever happened. The result is
 * kept with the snapshot (`drills/<id>.json`).
 */
import type { ChromaRest } from "./chroma/rest.js";
import type { Logger } from "./log.js";
import { asideName, buildingAside } from "./snapshot/aside.js";
import type { Manifest } from "./snapshot/manifest.js";
import { readChunk } from "./snapshot/read-chunk.js";
import type { RecordBatch } from "./snapshot/records.js";
import { restoreSnapshot } from "./snapshot/restore.js";
import { readJsonRecord, writeJsonRecord } from "./stored-json.js";
import type { Storage } from "./storage/types.js";

export interface DrillCheck {
  name: "restore" | "count" | "nearest" | "content" | "cleanup";
  collection: string | null;
  ok: boolean;
  message: string;
}

export interface DrillResult {
  snapshot: string;
  /** "image": the drill was the making of a restore image (in a scratch Chroma); absent: scratch collections of the live Chroma. */
  via?: "image";
  at: string;
  ok: boolean;
  records: number;
  bytes: number;
  durationMs: number;
  checks: DrillCheck[];
}

export interface DrillOptions {
  /** Records sampled per collection for the nearest-neighbour and content checks. */
  samples?: number;
  log: Logger;
  now?: () => Date;
}

export function drillKey(snapshotId: string): string {
  return `drills/${snapshotId}.json`;
}

/**
 * A scratch name for the drill's i-th collection. It ends like a restore's aside
 * collection (`.restore-<time>`), so status, backups and the aside sweep treat it as
 * never data: a drill that died is swept like an interrupted restore.
 */
export function drillCollectionName(snapshotId: string, index: number, now = Date.now()): string {
  return asideName(`drill-${snapshotId}-${index}`, now);
}

export async function readDrill(storage: Storage, snapshotId: string, log?: Logger): Promise<DrillResult | null> {
  return readJsonRecord<DrillResult>(storage, drillKey(snapshotId), log);
}

/** Every recorded drill, by snapshot id. */
export async function readDrills(storage: Storage, log?: Logger): Promise<Map<string, DrillResult>> {
  const out = new Map<string, DrillResult>();
  for await (const info of storage.list("drills/")) {
    const id = /^drills\/(.+)\.json$/.exec(info.key)?.[1];
    if (!id) continue;
    const result = await readJsonRecord<DrillResult>(storage, info.key, log);
    if (result) out.set(id, result);
  }
  return out;
}

export async function runDrill(chroma: ChromaRest, storage: Storage, manifest: Manifest, options: DrillOptions): Promise<DrillResult> {
  const now = options.now ?? (() => new Date());
  const started = now().getTime();
  const checks: DrillCheck[] = [];
  const rename = Object.fromEntries(manifest.collections.map((c, i) => [c.name, drillCollectionName(manifest.id, i, started)]));
  const scratch = Object.values(rename);
  // Held as "being built" for the whole drill: no concurrent restore's sweep takes them.
  const holdAll = scratch.reduceRight<() => Promise<void>>((inner, name) => () => buildingAside(name, inner), async () => {
    try {
      await restoreInto(chroma, storage, manifest, rename, checks, options);
    } finally {
      await cleanUp(chroma, scratch, checks);
    }
  });
  await holdAll();
  const result: DrillResult = {
    snapshot: manifest.id,
    at: new Date(started).toISOString(),
    ok: checks.every((c) => c.ok),
    records: manifest.records,
    bytes: manifest.bytes,
    durationMs: now().getTime() - started,
    checks,
  };
  await recordDrill(storage, result, options.log);
  return result;
}

/** Keeps a drill's result with its snapshot (best effort: a failed write is logged) and logs the outcome. */
export async function recordDrill(storage: Storage, result: DrillResult, log: Logger): Promise<void> {
  try {
    await writeJsonRecord(storage, drillKey(result.snapshot), result);
  } catch (err) {
    log("warn", "the drill's result could not be recorded in the store", { snapshot: result.snapshot, error: (err as Error).message });
  }
  const failed = result.checks.filter((c) => !c.ok);
  const what = result.via === "image" ? "restore drill (image build)" : "restore drill";
  if (failed.length > 0) log("error", `${what} of snapshot ${result.snapshot} failed: ${failed.map((c) => c.message).join("; ")}`, { snapshot: result.snapshot, failed });
  else log("info", `${what} of snapshot ${result.snapshot} passed`, { snapshot: result.snapshot, records: result.records, durationMs: result.durationMs });
}

async function restoreInto(chroma: ChromaRest, storage: Storage, manifest: Manifest, rename: Record<string, string>, checks: DrillCheck[], options: DrillOptions): Promise<void> {
  try {
    await restoreSnapshot(chroma, storage, manifest, { rename, mode: "replace", log: options.log });
    checks.push({ name: "restore", collection: null, ok: true, message: `${manifest.collections.length} collection(s) restored into scratch collections` });
  } catch (err) {
    checks.push({ name: "restore", collection: null, ok: false, message: `the restore failed: ${(err as Error).message}` });
    return;
  }
  checks.push(...(await checkRestored(chroma, storage, manifest, (name) => rename[name]!, options.samples)).checks);
}

/**
 * The checks of a restored snapshot, per collection: the record count, and records sampled
 * from the snapshot's own chunks are their own nearest neighbour and carry the snapshot's
 * documents and metadata. `target(name)`: where collection `name` was restored.
 * `sampleIds`: the ids checked, by collection.
 */
export async function checkRestored(chroma: ChromaRest, storage: Storage, manifest: Manifest, target: (name: string) => string, samples = 5): Promise<{ checks: DrillCheck[]; sampleIds: Map<string, string[]> }> {
  const checks: DrillCheck[] = [];
  const sampleIds = new Map<string, string[]>();
  for (const entry of manifest.collections) {
    const info = await chroma.getCollection(target(entry.name));
    if (!info) {
      checks.push({ name: "count", collection: entry.name, ok: false, message: `collection ${entry.name}: the restored collection is missing after the restore` });
      continue;
    }
    const count = await chroma.count(info.id);
    checks.push({ name: "count", collection: entry.name, ok: count === entry.records, message: `collection ${entry.name}: ${count} records restored, the snapshot has ${entry.records}` });
    if (entry.records === 0) continue;
    const sample = await sampleRecords(storage, entry, samples);
    sampleIds.set(entry.name, [...new Set(sample.map((r) => r.ids[0]!))]);
    checks.push(await nearestCheck(chroma, info.id, entry.name, sample));
    checks.push(await contentCheck(chroma, info.id, entry.name, sample));
  }
  return { checks, sampleIds };
}

/** Records picked from the snapshot's own chunks (not from what was restored). */
async function sampleRecords(storage: Storage, entry: Manifest["collections"][number], n: number): Promise<RecordBatch[]> {
  const out: RecordBatch[] = [];
  const chunks = entry.chunks.filter((c) => c.records > (c.drop?.length ?? 0));
  for (let i = 0; i < n && chunks.length > 0; i++) {
    const ref = chunks[Math.floor(Math.random() * chunks.length)]!;
    const batch = await readChunk(storage, ref, entry.name, entry.dimension);
    const drop = new Set(ref.drop ?? []);
    const live = batch.ids.map((_, j) => j).filter((j) => !drop.has(j));
    if (live.length === 0) continue;
    const j = live[Math.floor(Math.random() * live.length)]!;
    out.push({ ids: [batch.ids[j]!], dim: batch.dim, embeddings: batch.embeddings.slice(j * batch.dim, (j + 1) * batch.dim), documents: batch.documents.pick([j]), uris: [batch.uris[j] ?? null], metadatas: [batch.metadatas[j]!] });
  }
  return out;
}

/** Each sampled record is its own nearest neighbour: top of the answer, or tied with the top (duplicate vectors). */
async function nearestCheck(chroma: ChromaRest, collectionId: string, name: string, sample: RecordBatch[]): Promise<DrillCheck> {
  const misses: string[] = [];
  for (const r of sample) {
    const { ids, distances } = await chroma.queryNearest(collectionId, [Array.from(r.embeddings)], 10);
    const got = ids[0] ?? [];
    const dist = distances[0] ?? [];
    const at = got.indexOf(r.ids[0]!);
    const tied = at >= 0 && Math.abs((dist[at] ?? Infinity) - (dist[0] ?? 0)) <= 1e-6 * Math.max(1, Math.abs(dist[0] ?? 0));
    if (!tied) misses.push(`${r.ids[0]} (nearest: ${got[0] ?? "none"})`);
  }
  return {
    name: "nearest",
    collection: name,
    ok: misses.length === 0,
    message: misses.length === 0 ? `collection ${name}: ${sample.length} sampled record(s) are their own nearest neighbour` : `collection ${name}: ${misses.length} of ${sample.length} sampled record(s) are not their own nearest neighbour: ${misses.join(", ")}`,
  };
}

/** The sampled records came back with the snapshot's documents and metadata. */
async function contentCheck(chroma: ChromaRest, collectionId: string, name: string, sample: RecordBatch[]): Promise<DrillCheck> {
  const wrong: string[] = [];
  for (const r of sample) {
    const id = r.ids[0]!;
    const got = await chroma.getRecordsByIds(collectionId, [id]);
    if (got.ids[0] !== id) {
      wrong.push(`${id} missing`);
      continue;
    }
    if ((got.documents.values()[0] ?? null) !== (r.documents.values()[0] ?? null)) wrong.push(`${id} document differs`);
    if (!sameJson(got.metadatas[0] ?? "null", r.metadatas[0] ?? "null")) wrong.push(`${id} metadata differs`);
  }
  return {
    name: "content",
    collection: name,
    ok: wrong.length === 0,
    message: wrong.length === 0 ? `collection ${name}: ${sample.length} sampled record(s) have the snapshot's documents and metadata` : `collection ${name}: ${wrong.join(", ")}`,
  };
}

function sameJson(a: string | null, b: string | null): boolean {
  const norm = (s: string | null): string => (s === null ? "null" : JSON.stringify(sortKeys(JSON.parse(s))));
  try {
    return norm(a) === norm(b);
  } catch {
    return a === b;
  }
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

async function cleanUp(chroma: ChromaRest, scratch: string[], checks: DrillCheck[]): Promise<void> {
  const left: string[] = [];
  for (const name of scratch) {
    try {
      await chroma.deleteCollection(name);
    } catch (err) {
      left.push(`${name}: ${(err as Error).message}`);
    }
  }
  checks.push({ name: "cleanup", collection: null, ok: left.length === 0, message: left.length === 0 ? "scratch collections removed" : `scratch collections not removed (the aside sweep will): ${left.join("; ")}` });
}

/**
 * DRILL_INTERVAL on Node: `new DrillSchedule(() => service.drill("latest"), seconds * 1000, log).start()`.
 * Schedules a drill of the newest snapshot every `intervalMs`; the runtime starts it. A failed drill is logged by the drill itself.
 */
export class DrillSchedule {
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly drillNewest: () => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.timer || this.intervalMs <= 0) return;
    const arm = () => {
      this.timer = setTimeout(() => {
        this.drillNewest()
          .catch((err: Error) => this.log("error", "scheduled restore drill could not run", { error: err.message }))
          .finally(() => {
            if (this.timer) arm();
          });
      }, this.intervalMs);
      (this.timer as { unref?: () => void }).unref?.();
    };
    arm();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
