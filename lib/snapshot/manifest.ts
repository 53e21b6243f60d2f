import * as v from "valibot";
import { InvalidRequestError, SnapshotCorruptError } from "../errors.js";
import { sha256Hex } from "./chunk.js";
import type { ManifestKeys } from "./signing.js";

/** Format 2: chunks are written as CBC2 (embeddings as byte planes); format 1 (CBC1 chunks) is still read. */
export const FORMAT_VERSION = 2;

const hash = v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/));
const count = v.pipe(v.number(), v.integer(), v.minValue(0));

const ChunkRefSchema = v.object({
  hash,
  records: count,
  /** Size as stored. */
  bytes: count,
  decodedBytes: count,
  /** sha256 of the chunk's digest sidecar when it was written, so the sidecar is as trustworthy as the manifest. */
  digests: v.optional(hash),
  /** Indexes (in chunk order) of records not part of this snapshot: deleted or changed since the chunk was written. */
  drop: v.optional(v.array(count)),
});

const CollectionSchema = v.object({
  name: v.string(),
  id: v.string(),
  metadataJson: v.string(),
  configurationJson: v.string(),
  /** The collection's `schema` as canonical JSON, when the source server reported one (Chroma 1.2+). */
  schemaJson: v.optional(v.string()),
  dimension: v.nullable(count),
  records: count,
  recordsAtStart: count,
  recordsAtEnd: count,
  bytes: count,
  chunks: v.array(ChunkRefSchema),
});

export const ManifestSchema = v.object({
  format: v.union([v.literal(1), v.literal(FORMAT_VERSION)]),
  id: v.string(),
  createdAt: v.string(),
  durationMs: count,
  tag: v.nullable(v.string()),
  chroma: v.object({ url: v.string(), version: v.nullable(v.string()), tenant: v.string(), database: v.string() }),
  collections: v.array(CollectionSchema),
  records: count,
  bytes: count,
  newBytes: count,
  warnings: v.array(v.string()),
});

export type ChunkRef = v.InferOutput<typeof ChunkRefSchema>;
export type CollectionEntry = v.InferOutput<typeof CollectionSchema>;
export type Manifest = v.InferOutput<typeof ManifestSchema>;

export interface SnapshotSummary {
  id: string;
  createdAt: string;
  tag: string | null;
  collections: number;
  records: number;
  bytes: number;
  newBytes: number;
  durationMs: number;
}

export function summarize(m: Manifest): SnapshotSummary {
  return {
    id: m.id,
    createdAt: m.createdAt,
    tag: m.tag,
    collections: m.collections.length,
    records: m.records,
    bytes: m.bytes,
    newBytes: m.newBytes,
    durationMs: m.durationMs,
  };
}

const SNAPSHOT_ID = /^\d{8}T\d{6}Z-[0-9a-f]{4}$/;

export function isSnapshotId(id: string): boolean {
  return SNAPSHOT_ID.test(id);
}

/** `20261124T021530Z-3f9a`: sorts by time (to the millisecond), safe as a storage key. */
export function newSnapshotId(at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  // The suffix is the millisecond (x16) plus a random digit: ids sort by time to the
  // millisecond, and two backups in the same millisecond still differ 15 times in 16.
  const suffix = (at.getUTCMilliseconds() * 16 + (crypto.getRandomValues(new Uint8Array(1))[0]! & 15)).toString(16).padStart(4, "0");
  return `${stamp}-${suffix}`;
}

export function manifestKey(id: string): string {
  if (!isSnapshotId(id)) throw new InvalidRequestError(`"${id}" is not a snapshot id (expected e.g. 20261124T021530Z-3f9a)`);
  return `snapshots/${id}.json`;
}

/**
 * The stored form: `{"checksum":"sha256:<hex>","manifest":<body>}`, where the checksum
 * covers the body's exact bytes, so it can be checked without re-serializing. With
 * signing keys (SNAPSHOT_SIGNING_KEY) a signature over the same bytes comes between them:
 * `{"checksum":"sha256:<hex>","signature":"hmac-sha256:<key id>:<hex>","manifest":<body>}`.
 */
const HEAD = /^\{"checksum":"sha256:([0-9a-f]{64})"(?:,"signature":"hmac-sha256:([0-9a-f]{8}):([0-9a-f]{64})")?,"manifest":/;

export async function serializeManifest(manifest: Manifest, keys?: ManifestKeys): Promise<Uint8Array> {
  const body = JSON.stringify(manifest);
  const bodyBytes = new TextEncoder().encode(body);
  const sum = await sha256Hex(bodyBytes);
  const signature = keys?.sign(bodyBytes);
  return new TextEncoder().encode(`{"checksum":"sha256:${sum}"${signature ? `,"signature":"${signature}"` : ""},"manifest":${body}}`);
}

/**
 * Parses a stored manifest, checking its checksum, its signature when `keys` has any
 * (an unsigned manifest is then refused), its shape and that it is the one asked for.
 * Without keys a signed manifest is accepted on its checksum (reported through `keys`).
 */
export async function parseManifest(bytes: Uint8Array, expectedId: string, keys?: ManifestKeys): Promise<Manifest> {
  const corrupt = (why: string): never => {
    throw new SnapshotCorruptError(`manifest of snapshot ${expectedId}: ${why}`, null, null);
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return corrupt("not UTF-8");
  }
  const head = HEAD.exec(text);
  if (!head || !text.endsWith("}")) return corrupt("not a manifest");
  const [prefix, stated, keyId, mac] = head;
  const body = text.slice(prefix.length, -1);
  const bodyBytes = new TextEncoder().encode(body);
  if ((await sha256Hex(bodyBytes)) !== stated) corrupt("checksum mismatch (the manifest was altered or damaged)");
  if (keys?.enabled) {
    if (!keyId || !mac) corrupt("not signed; it was taken before SNAPSHOT_SIGNING_KEY was set or the signature was stripped: take a new backup, or unset the key to use it");
    const check = keys.check(keyId!, mac!, bodyBytes);
    if (check === "unknown-key") corrupt(`signed with key ${keyId}, this service has ${keys.ids.join(", ")} (SNAPSHOT_SIGNING_KEY)`);
    if (check === "mismatch") corrupt("signature mismatch: the manifest was altered");
  } else if (keyId) {
    keys?.unverified(expectedId, keyId);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return corrupt("not JSON");
  }
  const result = v.safeParse(ManifestSchema, parsed);
  if (!result.success) {
    const version = (parsed as { format?: unknown })?.format;
    if (typeof version === "number" && version > FORMAT_VERSION) corrupt(`format version ${version} is newer than this service reads (${FORMAT_VERSION}); upgrade chroma-backup`);
    return corrupt(`unexpected shape: ${v.summarize(result.issues)}`);
  }
  const m = result.output;
  if (m.id !== expectedId) corrupt(`it describes snapshot ${m.id}`);
  // The totals a writer derives from the chunk lists (FORMAT.md): a list edited or swapped
  // without them, or JSON text that would be spliced into Chroma requests, is caught here.
  for (const c of m.collections) {
    const hashes = new Set<string>();
    for (const ref of c.chunks) {
      if (ref.drop?.some((i) => i >= ref.records)) corrupt(`collection ${c.name}: chunk ${ref.hash} drops a record it does not have`);
      if (hashes.has(ref.hash)) corrupt(`collection ${c.name}: chunk ${ref.hash} is listed twice`);
      hashes.add(ref.hash);
    }
    const held = c.chunks.reduce((n, ref) => n + ref.records - new Set(ref.drop).size, 0);
    if (held !== c.records) corrupt(`collection ${c.name}: its chunks hold ${held} records, it says ${c.records}`);
    const size = c.chunks.reduce((n, ref) => n + ref.bytes, 0);
    if (size !== c.bytes) corrupt(`collection ${c.name}: its chunks hold ${size} bytes, it says ${c.bytes}`);
    for (const field of ["metadataJson", "configurationJson", "schemaJson"] as const) {
      const text = c[field];
      if (text === undefined) continue;
      try {
        JSON.parse(text);
      } catch {
        corrupt(`collection ${c.name}: ${field} is not JSON`);
      }
    }
  }
  const held = m.collections.reduce((n, c) => n + c.records, 0);
  if (held !== m.records) corrupt(`its collections hold ${held} records, it says ${m.records}`);
  const size = m.collections.reduce((n, c) => n + c.bytes, 0);
  if (size !== m.bytes) corrupt(`its collections hold ${size} bytes, it says ${m.bytes}`);
  return m;
}
