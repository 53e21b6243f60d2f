import * as crypto from "node:crypto";
import { DigestIndex } from "./digest-index.js";

/**
 * The ids a backup has read from one collection, 22 to 28 bytes each (DigestIndex) instead
 * of the strings themselves (~100 bytes in a Set).
 *
 * An id is kept as the first 16 bytes of its SHA-256. Why that cannot lose a record: two
 * ids are taken for the same only when those 128 bits match. By chance that happens with
 * odds of n^2 / 2^129 (3 million ids: 1 in 10^25), the odds the format already takes for
 * a record digest; on purpose it costs about 2^64 SHA-256 calls, out of reach. A 64-bit
 * hash would be smaller but not safe: whoever writes ids could find a colliding pair in
 * 2^32 tries and make a backup skip a record as already read.
 */
export class SeenIds {
  private readonly index: DigestIndex;
  private readonly scratch = new Uint8Array(16);

  /** `expected`: about how many ids will be added (room for them is taken at once). */
  constructor(expected = 0) {
    this.index = new DigestIndex(expected);
  }

  get size(): number {
    return this.index.size;
  }

  has(id: string): boolean {
    return this.index.find(idDigest(id, this.scratch), 0) >= 0;
  }

  /** Adds `id`; false when it was there already. */
  add(id: string): boolean {
    return this.index.add(idDigest(id, this.scratch), 0).added;
  }

  get byteLength(): number {
    return this.index.byteLength;
  }
}

// crypto.hash (Node >= 20.12) hashes in one call without a Hash object; Workers may lack it.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: "buffer") => Uint8Array }).hash;

function idDigest(id: string, into: Uint8Array): Uint8Array {
  into.set((oneShot ? oneShot("sha256", id, "buffer") : crypto.createHash("sha256").update(id).digest()).subarray(0, 16));
  return into;
}
