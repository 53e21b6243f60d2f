import { concatBatches, copyBatch, sliceBatch, type RecordBatch } from "./records.js";

/** One chunk's records, and their 16-byte digests (record i at i * 16). */
export interface Chunk {
  batch: RecordBatch;
  digests: Uint8Array;
}

/** One record in `BOUNDARY_ODDS` (by a hash of its id) may end a chunk. */
const BOUNDARY_ODDS = 64;

/** FNV-1a over a string's UTF-16 code units: a cheap, stable hash (chunk boundaries from ids). */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Groups new records into chunks with content-defined boundaries: after `minBytes`, a
 * chunk ends at the first record whose id hashes to a boundary, so the same records cut
 * the same way in any snapshot; `maxBytes` caps it. Holds at most one chunk of records.
 */
export class Chunker {
  private parts: RecordBatch[] = [];
  private digestParts: Uint8Array[] = [];
  // The run of consecutive records of one page being added: [runStart, runEnd).
  private runPage: RecordBatch | null = null;
  private runDigests: Uint8Array | null = null;
  private runStart = 0;
  private runEnd = 0;
  private bytes = 0;

  constructor(
    private readonly minBytes: number,
    private readonly maxBytes: number,
  ) {}

  /** Adds record `i` of `page` (`digests`: the page's record digests). */
  push(page: RecordBatch, digests: Uint8Array, i: number): Chunk | null {
    if (this.runPage !== page || this.runEnd !== i) this.closeRun(page, digests, i);
    this.runEnd = i + 1;
    this.bytes += page.dim * 4 + page.ids[i]!.length + page.documents.textLength(i) + (page.uris[i]?.length ?? 0) + page.metadatas[i]!.length + 16;
    const boundary = this.bytes >= this.maxBytes || (this.bytes >= this.minBytes && fnv1a(page.ids[i]!) % BOUNDARY_ODDS === 0);
    return boundary ? this.flush() : null;
  }

  flush(): Chunk | null {
    this.closeRun(null, null, 0);
    if (this.parts.length === 0) return null;
    // Runs of whole pages are views into them until here, where they are copied once (a
    // chunk of one run stays as it is).
    const batch = concatBatches(this.parts);
    const digests = new Uint8Array(this.digestParts.reduce((n, d) => n + d.byteLength, 0));
    let o = 0;
    for (const d of this.digestParts) {
      digests.set(d, o);
      o += d.byteLength;
    }
    this.parts = [];
    this.digestParts = [];
    this.bytes = 0;
    return { batch, digests };
  }

  private closeRun(page: RecordBatch | null, digests: Uint8Array | null, start: number): void {
    if (this.runPage && this.runEnd > this.runStart) {
      // A whole page stays a view; part of one is copied, or it would hold its whole page
      // until the chunk is full: an incremental backup's chunk of changed records (1% of
      // them) spans ~100 times its size in pages (+72 MB at 300,000 records, 16 dims).
      const whole = this.runStart === 0 && this.runEnd === this.runPage.ids.length;
      const part = sliceBatch(this.runPage, this.runStart, this.runEnd);
      const partDigests = this.runDigests!.subarray(this.runStart * 16, this.runEnd * 16);
      this.parts.push(whole ? part : copyBatch(part));
      this.digestParts.push(whole ? partDigests : partDigests.slice());
    }
    this.runPage = page;
    this.runDigests = digests;
    this.runStart = start;
    this.runEnd = start;
  }
}
