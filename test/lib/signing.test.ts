/**
 * SNAPSHOT_SIGNING_KEY at the format level (docs/FORMAT.md): the stored form with and
 * without a key, every way a manifest can fail its signature, key rotation, and the
 * configuration check. No Chroma: the manifests are built by hand.
 */
import { createHash, createHmac } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../lib/config.js";
import { InvalidRequestError, SnapshotCorruptError } from "../../lib/errors.js";
import { FORMAT_VERSION, newSnapshotId, parseManifest, serializeManifest, type Manifest } from "../../lib/snapshot/manifest.js";
import { ManifestKeys, signingKeyId } from "../../lib/snapshot/signing.js";

const KEY = "a".repeat(8) + "0123456789abcdef0123456789abcdef";
const OLD = "old-key-0123456789abcdef0123456789abcdef";
const OTHER = "someone-elses-key-0123456789abcdef012345";

function manifest(): Manifest {
  const id = newSnapshotId(new Date("2026-01-02T03:04:05.678Z"));
  const chunk = { hash: "ab".repeat(32), records: 3, bytes: 100, decodedBytes: 150 };
  return {
    format: FORMAT_VERSION,
    id,
    createdAt: "2026-01-02T03:04:05.678Z",
    durationMs: 12,
    tag: null,
    chroma: { url: "http://127.0.0.1:8000", version: "1.0.0", tenant: "default_tenant", database: "default_database" },
    collections: [{ name: "notes", id: "c1", metadataJson: "null", configurationJson: "{}", dimension: 4, records: 3, recordsAtStart: 3, recordsAtEnd: 3, bytes: 100, chunks: [chunk] }],
    records: 3,
    bytes: 100,
    newBytes: 0,
    warnings: [],
  };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);
const sha = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");
/** The body of a stored manifest, by slicing as FORMAT.md says. */
const bodyOf = (stored: string) => stored.slice(stored.indexOf(',"manifest":') + ',"manifest":'.length, -1);

async function rejects(stored: Uint8Array, id: string, keys: ManifestKeys, why: RegExp): Promise<void> {
  const err = await parseManifest(stored, id, keys).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SnapshotCorruptError);
  expect((err as Error).message).toMatch(why);
}

describe("the stored form", () => {
  it("without a key: exactly today's bytes, {checksum, manifest}", async () => {
    const m = manifest();
    const body = JSON.stringify(m);
    expect(text(await serializeManifest(m))).toBe(`{"checksum":"sha256:${sha(body)}","manifest":${body}}`);
    expect(text(await serializeManifest(m, new ManifestKeys()))).toBe(`{"checksum":"sha256:${sha(body)}","manifest":${body}}`);
  });

  it("with a key: an HMAC-SHA256 of the body's exact bytes, named by the key's id, between checksum and body", async () => {
    const m = manifest();
    const body = JSON.stringify(m);
    const id = sha(KEY).slice(0, 8);
    expect(signingKeyId(KEY)).toBe(id);
    const mac = createHmac("sha256", KEY).update(body, "utf8").digest("hex");
    const stored = await serializeManifest(m, new ManifestKeys([KEY]));
    expect(text(stored)).toBe(`{"checksum":"sha256:${sha(body)}","signature":"hmac-sha256:${id}:${mac}","manifest":${body}}`);
    expect(await parseManifest(stored, m.id, new ManifestKeys([KEY]))).toEqual(m);
  });
});

describe("with a key, a manifest is refused (SnapshotCorruptError) when", () => {
  const keys = new ManifestKeys([KEY]);

  it("it is unsigned (taken before the key was set)", async () => {
    const m = manifest();
    await rejects(await serializeManifest(m), m.id, keys, /not signed; it was taken before SNAPSHOT_SIGNING_KEY was set or the signature was stripped: take a new backup, or unset the key to use it/);
  });

  it("its signature was stripped", async () => {
    const m = manifest();
    const stored = text(await serializeManifest(m, keys));
    const stripped = stored.replace(/,"signature":"[^"]*"/, "");
    expect(stripped).not.toBe(stored);
    await rejects(bytes(stripped), m.id, keys, /not signed/);
  });

  it("it was signed with another key: the error names both key ids", async () => {
    const m = manifest();
    await rejects(await serializeManifest(m, new ManifestKeys([OTHER])), m.id, keys, new RegExp(`signed with key ${signingKeyId(OTHER)}, this service has ${signingKeyId(KEY)}`));
  });

  it("its body was edited and its checksum recomputed, the signature left: signature mismatch", async () => {
    const m = manifest();
    const stored = text(await serializeManifest(m, keys));
    const body = bodyOf(stored).replace('"name":"notes"', '"name":"other"');
    const signature = /"signature":"([^"]+)"/.exec(stored)![1];
    const forged = `{"checksum":"sha256:${sha(body)}","signature":"${signature}","manifest":${body}}`;
    await rejects(bytes(forged), m.id, keys, /signature mismatch: the manifest was altered/);
    // Edited without recomputing anything: the checksum catches it first.
    await rejects(bytes(stored.replace('"name":"notes"', '"name":"other"')), m.id, keys, /checksum mismatch/);
  });

  it("its MAC was changed", async () => {
    const m = manifest();
    const stored = text(await serializeManifest(m, keys));
    const flipped = stored.replace(/(hmac-sha256:[0-9a-f]{8}:)([0-9a-f])/, (_all, head: string, digit: string) => head + (digit === "0" ? "1" : "0"));
    await rejects(bytes(flipped), m.id, keys, /signature mismatch/);
  });
});

describe("key rotation", () => {
  it("the first key signs; an old key in second position still verifies what it signed", async () => {
    const m = manifest();
    const before = await serializeManifest(m, new ManifestKeys([OLD]));
    const rotated = new ManifestKeys([KEY, OLD]);
    expect(rotated.ids).toEqual([signingKeyId(KEY), signingKeyId(OLD)]);
    expect(await parseManifest(before, m.id, rotated)).toEqual(m);
    const after = await serializeManifest(m, rotated);
    expect(text(after)).toContain(`"signature":"hmac-sha256:${signingKeyId(KEY)}:`);
    expect(await parseManifest(after, m.id, new ManifestKeys([KEY]))).toEqual(m);
    // Once the old key is dropped, what only it signed is refused.
    await rejects(before, m.id, new ManifestKeys([KEY]), new RegExp(`signed with key ${signingKeyId(OLD)}`));
  });
});

describe("without a key", () => {
  it("a signed manifest is accepted on its checksum, and reported once", async () => {
    const m = manifest();
    const stored = await serializeManifest(m, new ManifestKeys([KEY]));
    const reported = vi.fn();
    const none = new ManifestKeys([], reported);
    expect(await parseManifest(stored, m.id, none)).toEqual(m);
    expect(await parseManifest(stored, m.id, none)).toEqual(m);
    expect(reported).toHaveBeenCalledOnce();
    expect(reported).toHaveBeenCalledWith(m.id, signingKeyId(KEY));
    // Its checksum is still checked.
    await rejects(bytes(text(stored).replace('"name":"notes"', '"name":"other"')), m.id, none, /checksum mismatch/);
  });
});

describe("SNAPSHOT_SIGNING_KEY in the configuration", () => {
  it("unset or empty: no keys", () => {
    expect(loadConfig({}).signingKeys).toEqual([]);
    expect(loadConfig({ SNAPSHOT_SIGNING_KEY: "" }).signingKeys).toEqual([]);
  });

  it("several keys, separated by commas or whitespace, the first first", () => {
    expect(loadConfig({ SNAPSHOT_SIGNING_KEY: KEY }).signingKeys).toEqual([KEY]);
    expect(loadConfig({ SNAPSHOT_SIGNING_KEY: ` ${KEY}, ${OLD}\n` }).signingKeys).toEqual([KEY, OLD]);
    expect(loadConfig({ SNAPSHOT_SIGNING_KEY: `${KEY} ${OLD}` }).signingKeys).toEqual([KEY, OLD]);
  });

  it("a key shorter than 32 characters is refused, naming the variable and how to make one, never echoing the key", () => {
    for (const [raw, which] of [
      ["short-secret", /\(it has 12\)/],
      [`${KEY},tooshort`, /\(key 2 of 2 has 8\)/],
    ] as const) {
      let err: unknown;
      try {
        loadConfig({ SNAPSHOT_SIGNING_KEY: raw });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidRequestError);
      const message = (err as Error).message;
      expect(message).toMatch(/^configuration: SNAPSHOT_SIGNING_KEY must be at least 32 characters per key/);
      expect(message).toMatch(which);
      expect(message).toContain("openssl rand -hex 32");
      expect(message).not.toContain("short-secret");
      expect(message).not.toContain("tooshort");
      expect(message).not.toContain(KEY);
    }
    expect(() => new ManifestKeys(["short"])).toThrow(InvalidRequestError);
  });
});
