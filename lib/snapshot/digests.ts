import { sha256 } from "./hash.js";

/**
 * The record-digest sidecar of a chunk (`digests/<aa>/<chunk sha256>`): 16 bytes per
 * record, in chunk order, so the next backup can tell which records it already has
 * without downloading chunks. Self-checking: a sha256 of the rest closes it.
 *
 *   0 "CBD1"   4 count   8 count*16 digest bytes   then sha256 of all before it
 */
const DIGEST_MAGIC = 0x31444243; // "CBD1"

export const digestsKey = (hash: string) => `digests/${hash.slice(0, 2)}/${hash}`;

export function encodeDigests(digests: Uint8Array): Uint8Array {
  const count = digests.byteLength / 16;
  const body = new Uint8Array(8 + digests.byteLength + 32);
  const view = new DataView(body.buffer);
  view.setUint32(0, DIGEST_MAGIC, true);
  view.setUint32(4, count, true);
  body.set(digests, 8);
  body.set(sha256(body.subarray(0, 8 + digests.byteLength)), 8 + digests.byteLength);
  return body;
}

/** The digests, or null when the sidecar is damaged or does not match `records`. */
export function decodeDigests(bytes: Uint8Array, records: number): Uint8Array | null {
  if (bytes.byteLength !== 8 + records * 16 + 32) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== DIGEST_MAGIC || view.getUint32(4, true) !== records) return null;
  const end = 8 + records * 16;
  const sum = sha256(bytes.subarray(0, end));
  const stored = bytes.subarray(end);
  for (let i = 0; i < 32; i++) if (sum[i] !== stored[i]) return null;
  return bytes.slice(8, end);
}
