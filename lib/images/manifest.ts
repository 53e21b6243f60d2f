import * as v from "valibot";
import { ImageCorruptError, InvalidRequestError } from "../errors.js";
import { sha256Hex } from "../snapshot/chunk.js";
import { isSnapshotId } from "../snapshot/manifest.js";
import type { ManifestKeys } from "../snapshot/signing.js";
import type { ImageManifest } from "./types.js";

const hash = v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/));
const count = v.pipe(v.number(), v.integer(), v.minValue(0));

/** Relative, `/`-separated, no empty, `.` or `..` segment, no control characters or backslash. */
const relativePath = v.pipe(
  v.string(),
  v.check((p) => isSafeRelativePath(p), "not a safe relative path"),
);

/** `codec` only in format 2 (checked below): a format 1 reader never saw it. */
const chunkRef = v.object({ hash, bytes: count, size: count, codec: v.optional(v.literal("raw")) });

const ImageManifestSchema = v.object({
  formatVersion: v.union([v.literal(1), v.literal(2)]),
  snapshot: v.pipe(v.string(), v.check(isSnapshotId, "not a snapshot id")),
  chromaVersion: v.pipe(v.string(), v.minLength(1)),
  createdAt: v.string(),
  bytes: count,
  storedBytes: count,
  files: v.array(
    v.object({
      path: relativePath,
      size: count,
      sha256: hash,
      chunks: v.array(chunkRef),
    }),
  ),
  collections: v.array(v.object({ name: v.string(), records: count, sampleIds: v.array(v.string()) })),
});

export function isSafeRelativePath(path: string): boolean {
  // eslint-disable-next-line no-control-regex
  if (path === "" || path.startsWith("/") || path.includes("\\") || /[\u0000-\u001f\u007f]/.test(path)) return false;
  return path.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

export function imageKey(snapshotId: string): string {
  if (!isSnapshotId(snapshotId)) throw new InvalidRequestError(`"${snapshotId}" is not a snapshot id (expected e.g. 20261124T021530Z-3f9a)`);
  return `images/${snapshotId}.json`;
}

/** The snapshot id of an image manifest's key, or null for any other key. */
export function imageIdOfKey(key: string): string | null {
  const match = /^images\/(.+)\.json$/.exec(key);
  return match && isSnapshotId(match[1]!) ? match[1]! : null;
}

/** The same envelope as snapshot manifests (docs/FORMAT.md): a checksum, optionally a signature, then the body. */
const HEAD = /^\{"checksum":"sha256:([0-9a-f]{64})"(?:,"signature":"hmac-sha256:([0-9a-f]{8}):([0-9a-f]{64})")?,"manifest":/;

export function serializeImageManifest(manifest: ImageManifest, keys?: ManifestKeys): Uint8Array {
  const body = JSON.stringify(manifest);
  const bodyBytes = new TextEncoder().encode(body);
  const signature = keys?.sign(bodyBytes);
  return new TextEncoder().encode(`{"checksum":"sha256:${sha256Hex(bodyBytes)}"${signature ? `,"signature":"${signature}"` : ""},"manifest":${body}}`);
}

/**
 * Parses a stored image manifest: checksum, signature when `keys` has any, shape, that it
 * is the image asked for, and that its totals add up. Anything else: ImageCorruptError.
 */
export function parseImageManifest(bytes: Uint8Array, expectedSnapshot: string, keys?: ManifestKeys): ImageManifest {
  const corrupt = (why: string): never => {
    throw new ImageCorruptError(`image of snapshot ${expectedSnapshot}: manifest ${why}`, expectedSnapshot, null);
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return corrupt("is not UTF-8");
  }
  const head = HEAD.exec(text);
  if (!head || !text.endsWith("}")) return corrupt("is not an image manifest");
  const [prefix, stated, keyId, mac] = head;
  const bodyBytes = new TextEncoder().encode(text.slice(prefix.length, -1));
  if (sha256Hex(bodyBytes) !== stated) corrupt("checksum mismatch (altered or damaged)");
  if (keys?.enabled) {
    if (!keyId || !mac) corrupt("is not signed (SNAPSHOT_SIGNING_KEY is set)");
    const check = keys.check(keyId!, mac!, bodyBytes);
    if (check !== "ok") corrupt(check === "unknown-key" ? `is signed with key ${keyId}, this service has ${keys.ids.join(", ")}` : "signature mismatch: altered");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bodyBytes));
  } catch {
    return corrupt("is not JSON");
  }
  const result = v.safeParse(ImageManifestSchema, parsed);
  if (!result.success) return corrupt(`has an unexpected shape: ${v.summarize(result.issues)}`);
  const m = result.output as ImageManifest;
  if (m.snapshot !== expectedSnapshot) corrupt(`describes snapshot ${m.snapshot}`);
  const paths = new Set<string>();
  let bytesTotal = 0;
  let stored = 0;
  for (const f of m.files) {
    if (paths.has(f.path)) corrupt(`lists ${f.path} twice`);
    paths.add(f.path);
    for (const c of f.chunks) {
      if (c.codec === undefined) continue;
      if (m.formatVersion === 1) corrupt(`is format 1 and marks chunk ${c.hash} ${c.codec}`);
      if (c.bytes !== c.size) corrupt(`file ${f.path}: raw chunk ${c.hash} stores ${c.bytes} bytes of ${c.size}`);
    }
    const size = f.chunks.reduce((n, c) => n + c.size, 0);
    if (size !== f.size) corrupt(`file ${f.path}: its chunks hold ${size} bytes, it says ${f.size}`);
    bytesTotal += f.size;
    stored += f.chunks.reduce((n, c) => n + c.bytes, 0);
  }
  // A file that is also a folder of another (a, a/b) could not be written back.
  for (const p of paths) for (let i = p.indexOf("/"); i > 0; i = p.indexOf("/", i + 1)) if (paths.has(p.slice(0, i))) corrupt(`lists ${p.slice(0, i)} as a file and a folder`);
  if (bytesTotal !== m.bytes) corrupt(`files hold ${bytesTotal} bytes, it says ${m.bytes}`);
  if (stored !== m.storedBytes) corrupt(`chunks hold ${stored} stored bytes, it says ${m.storedBytes}`);
  return m;
}
