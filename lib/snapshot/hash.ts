import { createHash } from "node:crypto";

/**
 * sha256 for chunks and digest sidecars, synchronous (node:crypto, which Workers provide
 * under nodejs_compat). lib/storage/streams.ts has the WebCrypto sha256Hex (async) for
 * stored JSON and the drivers. This one stays because its callers are synchronous:
 * encodeDigests/decodeDigests, and the chunk checks of the backup and restore pipeline.
 * Speed is no longer the reason: on 2 MiB, a busy machine measured 4-9 ms here against
 * 2-17 ms for WebCrypto's digest (inconclusive; the old "3-4x" is not confirmed).
 */
export function sha256(bytes: Uint8Array): Uint8Array {
  return createHash("sha256").update(bytes).digest();
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
