import * as v from "valibot";
import type { ChromaRest } from "../chroma/rest.js";
import { RestoreIncompatibleError } from "../errors.js";
import { canonicalJson, parseRawJson, RawNumber, type RawJson } from "../json/raw-json.js";
import type { Storage } from "../storage/types.js";
import type { CollectionEntry } from "./manifest.js";
import { readChunk } from "./read-chunk.js";
import type { RecordBatch } from "./records.js";

/** What a restore target takes; null: no limit known. Sizes are UTF-8 bytes. */
export interface TargetLimits {
  /** Records per add/upsert request. */
  recordsPerWrite: number | null;
  /** add/upsert requests in flight at once, per collection. */
  concurrentWrites: number | null;
  embeddingDimensions: number | null;
  documentBytes: number | null;
  uriBytes: number | null;
  idBytes: number | null;
  /** Keys of one record's metadata. */
  metadataKeys: number | null;
  metadataKeyBytes: number | null;
  /** A string value's bytes; any other value's JSON text (an array, a sparse vector). */
  metadataValueBytes: number | null;
  collectionNameBytes: number | null;
  collectionMetadataKeys: number | null;
  collectionMetadataValueBytes: number | null;
  recordsPerCollection: number | null;
}

export type LimitName = keyof TargetLimits;

/**
 * Chroma Cloud's quotas as documented at https://docs.trychroma.com/cloud/quotas-limits
 * ("Quotas & Limits": per request or per collection; most can be raised on request, hence
 * CHROMA_TARGET_LIMITS). The one table of them.
 */
export const CHROMA_CLOUD_LIMITS: Readonly<TargetLimits> = Object.freeze({
  recordsPerWrite: 300,
  concurrentWrites: 10,
  embeddingDimensions: 4096,
  documentBytes: 16_384,
  uriBytes: 256,
  idBytes: 128,
  metadataKeys: 32,
  metadataKeyBytes: 36,
  metadataValueBytes: 4096,
  collectionNameBytes: 128,
  collectionMetadataKeys: 32,
  collectionMetadataValueBytes: 256,
  recordsPerCollection: 5_000_000,
});

/** A single-node Chroma: nothing beyond the batch size its pre-flight check reports. */
const NO_LIMITS: Readonly<TargetLimits> = Object.freeze(Object.fromEntries(Object.keys(CHROMA_CLOUD_LIMITS).map((k) => [k, null])) as unknown as TargetLimits);

const limit = v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1)));
const SettingsSchema = v.strictObject({
  /** Hold the target to Chroma Cloud's quotas (default: when its host is *.trychroma.com). */
  cloud: v.optional(v.boolean()),
  ...(Object.fromEntries(Object.keys(CHROMA_CLOUD_LIMITS).map((k) => [k, v.optional(limit)])) as Record<LimitName, v.OptionalSchema<typeof limit, undefined>>),
});

/** CHROMA_TARGET_LIMITS: `cloud` and any limit of TargetLimits (a number, or null for none), over what the target's address implies. */
export type TargetLimitSettings = v.InferOutput<typeof SettingsSchema>;

/** Parses CHROMA_TARGET_LIMITS (a JSON object); throws an Error saying what is wrong. */
export function parseTargetLimits(text: string): TargetLimitSettings {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`must be a JSON object such as {"cloud":true} or {"documentBytes":16384}, got ${JSON.stringify(text.slice(0, 80))}`);
  }
  const parsed = v.safeParse(SettingsSchema, json);
  if (!parsed.success) throw new Error(`${v.summarize(parsed.issues).replace(/\n/g, "; ")} (keys: cloud, ${Object.keys(CHROMA_CLOUD_LIMITS).join(", ")})`);
  return parsed.output;
}

/** Chroma Cloud answers at api.trychroma.com. */
export function isChromaCloud(url: string): boolean {
  try {
    const host = new URL(url).hostname;
    return host === "trychroma.com" || host.endsWith(".trychroma.com");
  } catch {
    return false;
  }
}

export interface ResolvedLimits extends TargetLimits {
  recordsPerWrite: number;
  /** Chroma Cloud's quotas apply. */
  cloud: boolean;
}

/** The limits of `chroma`: Cloud's when it is Cloud, the settings over them, and never more per write than its pre-flight check allows. */
export async function targetLimits(chroma: ChromaRest, settings: TargetLimitSettings = {}): Promise<ResolvedLimits> {
  const { cloud: forced, ...overrides } = settings;
  const cloud = forced ?? isChromaCloud(chroma.url);
  const limits: TargetLimits = { ...(cloud ? CHROMA_CLOUD_LIMITS : NO_LIMITS) };
  for (const [name, value] of Object.entries(overrides) as [LimitName, number | null | undefined][]) if (value !== undefined) limits[name] = value;
  const preflight = await chroma.maxBatchSize();
  return { ...limits, recordsPerWrite: Math.min(preflight, limits.recordsPerWrite ?? preflight), cloud };
}

/** A record (or, with `record` null, a collection) that does not fit the target. */
export interface Misfit {
  collection: string;
  record: string | null;
  field: string;
  size: number;
  limit: number;
  /** Which limit (a TargetLimits name). */
  name: LimitName;
}

export interface MisfitReport {
  /** Every misfit found (a record counts once per field that does not fit). */
  count: number;
  /** The first MAX_LISTED of them. */
  first: Misfit[];
}

export const MAX_LISTED = 20;

const RECORD_LIMITS: LimitName[] = ["documentBytes", "uriBytes", "idBytes", "metadataKeys", "metadataKeyBytes", "metadataValueBytes"];

/**
 * The records and collections of a restore that would not fit the target's limits. Reads
 * (and verifies) every chunk only when a per-record limit applies (Cloud, or settings).
 */
export async function findMisfits(storage: Storage, plan: { entry: CollectionEntry; target: string }[], limits: TargetLimits, signal?: AbortSignal): Promise<MisfitReport> {
  const report: MisfitReport = { count: 0, first: [] };
  const add = (m: Misfit) => {
    report.count++;
    if (report.first.length < MAX_LISTED) report.first.push(m);
  };
  for (const { entry, target } of plan) collectionMisfits(target, entry, limits, add);
  if (!RECORD_LIMITS.some((name) => limits[name] !== null)) return report;
  for (const { entry, target } of plan) {
    for (const ref of entry.chunks) {
      signal?.throwIfAborted();
      const batch = await readChunk(storage, ref, entry.name, entry.dimension);
      const dropped = new Set(ref.drop ?? []);
      recordMisfits(target, batch, limits, add, (i) => !dropped.has(i));
    }
  }
  return report;
}

/** The restore refused up front when anything does not fit: 422 restore_incompatible naming the first and the count. */
export function refuseMisfits(report: MisfitReport, cloud: boolean): void {
  const first = report.first[0];
  if (!first) return;
  const where = first.record === null ? "" : `record ${JSON.stringify(first.record)}, `;
  const lacks = `${first.field} is ${first.size} ${first.name === "embeddingDimensions" ? "dimensions" : first.name.endsWith("Bytes") ? "bytes" : ""}`.trimEnd() + `, the target takes at most ${first.limit} (${first.name}${cloud ? ", a Chroma Cloud quota" : ""})`;
  throw new RestoreIncompatibleError(
    `collection ${first.collection}: ${where}${lacks}; ${report.count} in all would not fit (a dry run lists them); nothing was replaced`,
    { collection: first.collection, record: first.record, field: first.field, lacks, size: first.size, limit: first.limit, count: report.count, first: report.first },
  );
}

function collectionMisfits(target: string, entry: CollectionEntry, limits: TargetLimits, add: (m: Misfit) => void): void {
  const check = (name: LimitName, field: string, size: number) => {
    const max = limits[name];
    if (max !== null && size > max) add({ collection: target, record: null, field, size, limit: max, name });
  };
  check("collectionNameBytes", "name", utf8Length(target));
  check("recordsPerCollection", "records", entry.records);
  if (entry.dimension !== null) check("embeddingDimensions", "embedding", entry.dimension);
  const metadata = objectOf(parseRawJson(entry.metadataJson));
  if (metadata) {
    const keys = Object.keys(metadata).sort();
    check("collectionMetadataKeys", "metadata", keys.length);
    for (const key of keys) check("collectionMetadataValueBytes", `metadata.${key}`, valueBytes(metadata[key]!));
  }
}

function recordMisfits(target: string, batch: RecordBatch, limits: TargetLimits, add: (m: Misfit) => void, live: (i: number) => boolean): void {
  const documents = limits.documentBytes === null ? null : batch.documents;
  for (let i = 0; i < batch.ids.length; i++) {
    if (!live(i)) continue;
    const record = batch.ids[i]!;
    const check = (name: LimitName, field: string, size: number) => {
      const max = limits[name];
      if (max !== null && size > max) add({ collection: target, record, field, size, limit: max, name });
    };
    check("idBytes", "id", utf8Length(record));
    // A document's JSON text is at least its bytes plus two quotes: only a long one is decoded.
    if (documents && documents.textLength(i) - 2 > limits.documentBytes!) {
      const text = new TextDecoder().decode(documents.text(i));
      check("documentBytes", "document", text === "null" ? 0 : utf8Length(JSON.parse(text) as string));
    }
    const uri = batch.uris[i];
    if (uri) check("uriBytes", "uri", utf8Length(uri));
    const text = batch.metadatas[i]!;
    // Shorter than any limit and too short to hold more keys than allowed (each takes 4+ characters): fits.
    if (text.length <= Math.min(limits.metadataKeyBytes ?? Infinity, limits.metadataValueBytes ?? Infinity, 4 * (limits.metadataKeys ?? Infinity))) continue;
    const metadata = objectOf(parseRawJson(text));
    if (!metadata) continue;
    const keys = Object.keys(metadata).sort();
    check("metadataKeys", "metadata", keys.length);
    for (const key of keys) {
      check("metadataKeyBytes", `metadata key ${JSON.stringify(key)}`, utf8Length(key));
      check("metadataValueBytes", `metadata.${key}`, valueBytes(metadata[key]!));
    }
  }
}

function objectOf(value: RawJson): Record<string, RawJson> | null {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof RawNumber) ? value : null;
}

const valueBytes = (value: RawJson) => utf8Length(typeof value === "string" ? value : canonicalJson(value));

function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      i++; // a surrogate pair: 4 bytes for 2 UTF-16 units
      n += 2;
    } else if (c >= 0x800) n += 2;
    else if (c >= 0x80) n += 1;
  }
  return n;
}
