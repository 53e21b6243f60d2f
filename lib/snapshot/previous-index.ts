import { forEachLimited } from "../concurrency.js";
import { isNotFound } from "../storage/errors.js";
import { readAll, TooLargeError } from "../storage/streams.js";
import type { Storage } from "../storage/types.js";
import { decodeDigests, digestsKey, sha256Hex } from "./chunk.js";
import { DigestIndex } from "./digest-index.js";
import type { ChunkRef, CollectionEntry } from "./manifest.js";

/** A previous chunk whose records are dropped once fewer than this share of them is still live. */
const COMPACT_BELOW_LIVE_FRACTION = 0.5;

/**
 * What the previous snapshot of a collection already holds, by record digest: a record
 * read now whose digest is there stays where it is (its chunk is referenced again).
 * 27 to 33 bytes per previous record (DigestIndex, plus where each one sits and whether
 * it was claimed), whatever the size of the records.
 */
export class PreviousIndex {
  private readonly digests: DigestIndex;
  /** Per record of `refs` (in order): its number in `digests`, -1 when not reusable. */
  private readonly numberAt: Int32Array;
  /** Per digest number: claimed by a record of this snapshot. */
  private readonly claimed: Uint8Array;

  private constructor(
    private readonly refs: readonly ChunkRef[],
    private readonly firstRecord: readonly number[],
    total: number,
  ) {
    this.digests = new DigestIndex(total);
    this.numberAt = new Int32Array(total).fill(-1);
    this.claimed = new Uint8Array(total);
  }

  /**
   * Reads the sidecars of the previous snapshot's chunks. A sidecar is trusted when the
   * previous manifest binds it (`digests`: its sha256) or, for refs written before that
   * field existed, on its own checksum, except when manifests are signed: then only a
   * bound sidecar is trusted, since an unbound one is exactly what someone with write
   * access could forge to make a backup reuse old records. A chunk without a usable
   * sidecar, or mostly dropped already, is not reused: its live records are written afresh.
   */
  static async load(storage: Storage, prev: CollectionEntry | null, signed: boolean): Promise<PreviousIndex> {
    const refs = prev?.chunks ?? [];
    const firstRecord: number[] = [];
    let total = 0;
    for (const ref of refs) {
      firstRecord.push(total);
      total += ref.records;
    }
    const index = new PreviousIndex(refs, firstRecord, total);
    await forEachLimited(refs, 8, async (ref, r) => {
      const drop = new Set(ref.drop ?? []);
      if (ref.records - drop.size < ref.records * COMPACT_BELOW_LIVE_FRACTION) return;
      if (signed && !ref.digests) return;
      let digests: Uint8Array | null = null;
      try {
        const sidecar = await readAll(await storage.get(digestsKey(ref.hash)), 8 + ref.records * 16 + 32);
        if (!ref.digests || sha256Hex(sidecar) === ref.digests) digests = decodeDigests(sidecar, ref.records);
      } catch (err) {
        if (!isNotFound(err) && !(err instanceof TooLargeError)) throw err;
      }
      if (!digests) return;
      for (let i = 0; i < ref.records; i++) {
        if (drop.has(i)) continue;
        const { number, added } = index.digests.add(digests, i);
        if (added) index.numberAt[firstRecord[r]! + i] = number; // a record listed twice is kept once
      }
    });
    return index;
  }

  /** Whether record `i` (of `digests`, a page's record digests) is in the previous snapshot; if so it is kept. */
  claim(digests: Uint8Array, i: number): boolean {
    if (this.digests.size === 0) return false;
    const number = this.digests.find(digests, i);
    if (number < 0) return false;
    this.claimed[number] = 1;
    return true;
  }

  /** The previous chunks this snapshot references again, each with the records it no longer has in `drop`. */
  keptRefs(): ChunkRef[] {
    const out: ChunkRef[] = [];
    this.refs.forEach((ref, r) => {
      const drop: number[] = [];
      let reusable = false;
      for (let i = 0; i < ref.records; i++) {
        const number = this.numberAt[this.firstRecord[r]! + i]!;
        if (number >= 0) reusable = true;
        if (number < 0 || !this.claimed[number]) drop.push(i);
      }
      if (!reusable || drop.length === ref.records) return;
      const { hash, records, bytes, decodedBytes, digests } = ref;
      out.push({ hash, records, bytes, decodedBytes, ...(digests ? { digests } : {}), ...(drop.length > 0 ? { drop } : {}) });
    });
    return out;
  }

  get byteLength(): number {
    return this.digests.byteLength + this.numberAt.byteLength + this.claimed.byteLength;
  }
}
