import { ChromaRequestError, ChromaUnavailableError, RestoreIncompatibleError } from "../errors.js";
import type { ChromaRest, CollectionInfo } from "../chroma/rest.js";
import { JsonColumn } from "../json/json-column.js";
import { canonicalJson, parseRawJson, RawNumber, type RawJson } from "../json/raw-json.js";
import type { Storage } from "../storage/types.js";
import { asideName, buildingAside } from "./aside.js";
import type { CollectionEntry } from "./manifest.js";
import { readChunk } from "./read-chunk.js";
import type { RecordBatch } from "./records.js";

/**
 * What a restore target can take, found out from what the server does and reports (its
 * version route says "1.0.0" on 1.3 too): a scratch collection is created and deleted
 * (does the answer carry a `schema`?), and an add with array metadata is sent to a
 * collection id that does not exist: a server without array metadata refuses the body
 * (422 "did not match any variant of untagged enum MetadataValue") before it looks the
 * collection up; one with it answers that the collection does not exist. Nothing is
 * written: Chroma 1.3.4 was seen handing a record written into a deleted collection's
 * metadata to the next collection's first record.
 */
export interface TargetCapabilities {
  /** Collections carry a `schema` (Chroma 1.2+). */
  schema: boolean;
  /** Metadata values may be arrays (Chroma 1.2+). */
  arrayMetadata: boolean;
}

const PROBE_TARGET = "chroma-backup-probe";

/** Probes the target; the scratch collection is an aside one, so a crash leaves nothing a later sweep does not remove. */
export async function probeTarget(chroma: ChromaRest): Promise<TargetCapabilities> {
  const name = asideName(PROBE_TARGET);
  const schema = await buildingAside(name, async () => {
    try {
      return (await chroma.createCollection(name, "null", "null")).schemaJson !== null;
    } finally {
      await chroma.deleteCollection(name).catch(() => {});
    }
  });
  const probe: RecordBatch = {
    ids: ["probe"],
    dim: 1,
    embeddings: new Float32Array([0.5]),
    documents: JsonColumn.fromValues([null]),
    uris: [null],
    metadatas: ['{"probe":[1,2]}'],
  };
  let arrayMetadata = true;
  try {
    await chroma.writeRecords(crypto.randomUUID(), probe, "add");
  } catch (err) {
    if (err instanceof ChromaRequestError) arrayMetadata = !refusesMetadata(err);
    // A 5xx for the missing collection still answered past the body; no answer at all is a failure.
    else if (!(err instanceof ChromaUnavailableError && (err.details as { status?: number } | undefined)?.status !== undefined)) throw err;
  }
  return { schema, arrayMetadata };
}

const refusesMetadata = (err: ChromaRequestError) => err.message.includes("did not match any variant of untagged enum MetadataValue");

export interface MetadataProblem {
  record: string;
  field: string;
  lacks: string;
}

const LACKS_ARRAYS = "array metadata needs a newer Chroma than the target (1.2 or later)";
const LACKS_OBJECTS = "sparse vector (object) metadata needs a newer Chroma than the target";

/** The first record of `batch` whose metadata the target cannot take, or null. */
export function firstUnsupportedMetadata(batch: RecordBatch, capabilities: TargetCapabilities): MetadataProblem | null {
  if (capabilities.arrayMetadata) return null;
  for (let i = 0; i < batch.ids.length; i++) {
    const text = batch.metadatas[i]!;
    // Canonical metadata is an object of scalars unless a value is an array or object.
    if (!text.includes("[") && text.indexOf("{", 1) < 0) continue;
    const value = parseRawJson(text);
    if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof RawNumber) continue;
    for (const key of Object.keys(value).sort()) {
      const v = value[key]!;
      if (Array.isArray(v)) return { record: batch.ids[i]!, field: key, lacks: LACKS_ARRAYS };
      if (v !== null && typeof v === "object" && !(v instanceof RawNumber)) return { record: batch.ids[i]!, field: key, lacks: LACKS_OBJECTS };
    }
  }
  return null;
}

export function incompatible(collection: string, problem: MetadataProblem, cause?: unknown): RestoreIncompatibleError {
  return new RestoreIncompatibleError(
    `collection ${collection}: record ${JSON.stringify(problem.record)}, metadata field ${JSON.stringify(problem.field)}: ${problem.lacks}; nothing was replaced`,
    { collection, record: problem.record, field: problem.field, lacks: problem.lacks },
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Reads every chunk of every collection and refuses the restore when a record's metadata
 * is something the target cannot hold. Runs only for targets that lack something.
 */
export async function checkCollections(storage: Storage, entries: CollectionEntry[], capabilities: TargetCapabilities): Promise<void> {
  if (capabilities.arrayMetadata) return;
  for (const entry of entries) {
    for (const ref of entry.chunks) {
      const batch = await readChunk(storage, ref, entry.name, entry.dimension);
      const drop = new Set(ref.drop ?? []);
      const problem = firstUnsupportedMetadata(drop.size > 0 ? { ...batch, metadatas: batch.metadatas.map((m, i) => (drop.has(i) ? "null" : m)) } : batch, capabilities);
      if (problem) throw incompatible(entry.name, problem);
    }
  }
}

const METADATA_REFUSAL = /metadatas\[(\d+)\]\.([^:]*): data did not match any variant of untagged enum MetadataValue/;

/**
 * Chroma's own refusal of restored metadata (a 422 naming `metadatas[i].key`) as a
 * RestoreIncompatibleError naming the record; any other error as it is.
 */
export function asIncompatible(err: unknown, collection: string, batch: RecordBatch): unknown {
  if (!(err instanceof ChromaRequestError) || !refusesMetadata(err)) return err;
  const match = METADATA_REFUSAL.exec(err.message);
  const index = match ? Number(match[1]) : -1;
  const record = batch.ids[index] ?? null;
  const field = match?.[2] ?? null;
  const lacks = `metadata of this kind needs a newer Chroma than the target (it refused it: ${err.message.slice(0, 300)})`;
  return new RestoreIncompatibleError(
    `collection ${collection}: record ${JSON.stringify(record)}, metadata field ${JSON.stringify(field)}: ${lacks}`,
    { collection, record, field, lacks },
    { cause: err },
  );
}

/** The settings of the snapshot's schema the created collection does not have, as warnings. */
export function schemaWarnings(collection: string, entry: CollectionEntry, created: CollectionInfo, capabilities: TargetCapabilities): string[] {
  if (entry.schemaJson === undefined) return [];
  const stored = parseRawJson(entry.schemaJson);
  if (!capabilities.schema || created.schemaJson === null) {
    const keys = customKeys(stored);
    return [
      `collection ${collection}: the target Chroma has no collection schema (it predates 1.2); created from the configuration, so the snapshot's index settings${keys.length ? ` for metadata keys ${keys.join(", ")}` : ""} were not applied`,
    ];
  }
  const got = parseRawJson(created.schemaJson);
  const differences: string[] = [];
  const walk = (want: RawJson, have: RawJson | undefined, path: string) => {
    if (differences.length >= 20) return;
    if (want !== null && typeof want === "object" && !Array.isArray(want) && !(want instanceof RawNumber)) {
      const there = have !== null && typeof have === "object" && !Array.isArray(have) && !(have instanceof RawNumber) ? have : undefined;
      for (const key of Object.keys(want).sort()) walk(want[key]!, there?.[key], path ? `${path}.${key}` : key);
      return;
    }
    const a = canonicalJson(want);
    const b = have === undefined ? "(absent)" : canonicalJson(have);
    if (a !== b) differences.push(`${path}: snapshot ${a}, target ${b}`);
  };
  walk(stored, got, "");
  return differences.length ? [`collection ${collection}: the target did not take these schema settings: ${differences.join("; ")}`] : [];
}

function customKeys(schema: RawJson): string[] {
  if (schema === null || typeof schema !== "object" || Array.isArray(schema) || schema instanceof RawNumber) return [];
  const keys = schema.keys;
  if (keys === null || keys === undefined || typeof keys !== "object" || Array.isArray(keys) || keys instanceof RawNumber) return [];
  return Object.keys(keys).filter((k) => !k.startsWith("#")).sort();
}
