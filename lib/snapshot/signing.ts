import { Buffer } from "node:buffer";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { InvalidRequestError } from "../errors.js";
import type { Logger } from "../log.js";

/** The shortest signing key accepted (`openssl rand -hex 32` gives 64 characters). */
export const MIN_SIGNING_KEY_LENGTH = 32;

/** SNAPSHOT_SIGNING_KEY: one key, or several separated by commas or whitespace (the first signs). */
export function splitSigningKeys(raw: string): string[] {
  return raw.split(/[\s,]+/).filter((k) => k !== "");
}

/** A key's public name in signatures and errors: the first 8 hex digits of the sha256 of its UTF-8 bytes. */
export function signingKeyId(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex").slice(0, 8);
}

export type SignatureCheck = "ok" | "unknown-key" | "mismatch";

/**
 * The keys that sign and check manifests (docs/FORMAT.md): HMAC-SHA256 over the exact
 * bytes of the manifest body. The first key signs new manifests; every key verifies, so
 * a key can be rotated in front of the old one. With no key, manifests are written
 * unsigned and nothing is checked: parseManifest accepts a signed manifest on its
 * checksum and reports the first one through `onUnverified`.
 */
export class ManifestKeys {
  private readonly keys: { id: string; secret: Buffer }[];
  private warned = false;

  constructor(
    secrets: readonly string[] = [],
    private readonly onUnverified?: (snapshot: string, keyId: string) => void,
  ) {
    for (const s of secrets) if (s.length < MIN_SIGNING_KEY_LENGTH) throw new InvalidRequestError(`a manifest signing key must be at least ${MIN_SIGNING_KEY_LENGTH} characters`);
    this.keys = secrets.map((s) => ({ id: signingKeyId(s), secret: Buffer.from(s, "utf8") }));
  }

  /** True when manifests are signed and every manifest read must carry a valid signature. */
  get enabled(): boolean {
    return this.keys.length > 0;
  }

  /** The key ids, the signing one first. */
  get ids(): string[] {
    return [...new Set(this.keys.map((k) => k.id))];
  }

  /** `hmac-sha256:<key id>:<hex>` with the first key; null without keys. */
  sign(body: Uint8Array): string | null {
    const key = this.keys[0];
    return key ? `hmac-sha256:${key.id}:${mac(key.secret, body).toString("hex")}` : null;
  }

  /** Checks a signature's MAC (64 hex digits) in constant time, with every key of that id. */
  check(keyId: string, macHex: string, body: Uint8Array): SignatureCheck {
    const candidates = this.keys.filter((k) => k.id === keyId);
    if (candidates.length === 0) return "unknown-key";
    const stated = Buffer.from(macHex, "hex");
    return candidates.some((k) => {
      const expected = mac(k.secret, body);
      return stated.byteLength === expected.byteLength && timingSafeEqual(stated, expected);
    })
      ? "ok"
      : "mismatch";
  }

  /** A signed manifest read without keys: reported once. */
  unverified(snapshot: string, keyId: string): void {
    if (this.warned) return;
    this.warned = true;
    this.onUnverified?.(snapshot, keyId);
  }
}

function mac(secret: Buffer, body: Uint8Array): Buffer {
  return createHmac("sha256", secret).update(body).digest();
}

/** The startup line: which key signs, or, plainly, what an unsigned store does not protect against. */
export function logSigningStatus(keys: ManifestKeys, log: Logger): void {
  if (keys.enabled) log("info", "snapshot manifests are signed (SNAPSHOT_SIGNING_KEY)", { signingKey: keys.ids[0], verifyingKeys: keys.ids });
  else
    log(
      "warn",
      "SNAPSHOT_SIGNING_KEY is not set: snapshot manifests are checksummed but not signed, so anyone with write access to the store could forge a snapshot (e.g. point it at another collection's chunks) and verify and restore would accept it; set SNAPSHOT_SIGNING_KEY (openssl rand -hex 32) to sign them",
    );
}
