/**
 * Content-defined chunking (FastCDC, Xia et al. 2016/2020: a gear rolling hash with
 * normalized chunking) over a stream of bytes, for restore images: a region of a file that
 * did not change cuts the same way in the next image, so its chunks are not uploaded again.
 *
 * Hand-written (about 40 lines): npm has no well-kept FastCDC for JavaScript (`fastcdc` is
 * Rust bindings that need a toolchain at install, the WebAssembly ones are unmaintained
 * 0.1 releases, and none streams).
 *
 * The gear table is fixed (a seeded generator): changing it, or the sizes, moves every
 * boundary, which costs one full upload of the next image and nothing else.
 */

export interface CdcSizes {
  minBytes: number;
  /** A power of two: the boundary odds are set from it. */
  avgBytes: number;
  maxBytes: number;
}

/**
 * 16 KiB average (4 to 64 KiB). Chroma's files change in place: SQLite rewrites 4 KiB pages
 * and hnswlib rewrites fixed-size elements (a 384-float vector plus its links, ~1.7 KB),
 * so what a change costs is the chunk around each touched place. Smaller chunks dedup
 * better and cost a manifest entry and a store request each; bench/image-dedup.ts measured
 * the choice (see BENCHMARKS.md).
 */
export const IMAGE_CDC_SIZES: CdcSizes = { minBytes: 4 * 1024, avgBytes: 16 * 1024, maxBytes: 64 * 1024 };

/** 256 32-bit gear values from a fixed seed (splitmix32). */
const GEAR = (() => {
  const table = new Int32Array(256);
  let state = 0x9e3779b9;
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    table[i] = z ^ (z >>> 16);
  }
  return table;
})();

/** A mask of the hash's `bits` highest bits: with `h << 1` they depend on the last 32 bytes, the low ones on fewer. */
const highBits = (bits: number): number => (bits <= 0 ? 0 : ~0 << (32 - bits));

function checkSizes(s: CdcSizes): { maskHard: number; maskEasy: number } {
  const bits = Math.log2(s.avgBytes);
  if (!Number.isInteger(bits) || !(s.minBytes > 0 && s.minBytes < s.avgBytes && s.avgBytes < s.maxBytes)) {
    throw new RangeError(`CDC sizes must be 0 < min < avg < max with avg a power of two: ${JSON.stringify(s)}`);
  }
  // Normalized chunking, level 2: harder to cut before the average, easier after it.
  return { maskHard: highBits(bits + 2), maskEasy: highBits(bits - 2) };
}

/**
 * Where the chunk at the start of `buf` ends (its length). `buf` holds at least
 * `maxBytes` bytes, or is the rest of the input.
 */
export function cutPoint(buf: Uint8Array, sizes: CdcSizes = IMAGE_CDC_SIZES, masks = checkSizes(sizes)): number {
  const n = buf.byteLength;
  if (n <= sizes.minBytes) return n;
  const end = Math.min(n, sizes.maxBytes);
  const normal = Math.min(end, sizes.avgBytes);
  let h = 0;
  let i = sizes.minBytes;
  for (; i < normal; i++) {
    h = ((h << 1) + GEAR[buf[i]!]!) | 0;
    if ((h & masks.maskHard) === 0) return i + 1;
  }
  for (; i < end; i++) {
    h = ((h << 1) + GEAR[buf[i]!]!) | 0;
    if ((h & masks.maskEasy) === 0) return i + 1;
  }
  return end;
}

/**
 * Cuts a byte stream into content-defined chunks, in order. Holds at most `maxBytes` plus
 * one input piece; each yielded chunk is its own copy (safe to keep while reading on).
 */
export async function* cdcChunks(source: AsyncIterable<Uint8Array>, sizes: CdcSizes = IMAGE_CDC_SIZES): AsyncGenerator<Uint8Array> {
  const masks = checkSizes(sizes);
  let pending = new Uint8Array(0);
  for await (const piece of source) {
    if (piece.byteLength === 0) continue;
    const joined = new Uint8Array(pending.byteLength + piece.byteLength);
    joined.set(pending, 0);
    joined.set(piece, pending.byteLength);
    pending = joined;
    let at = 0;
    while (pending.byteLength - at >= sizes.maxBytes) {
      const len = cutPoint(pending.subarray(at), sizes, masks);
      yield pending.slice(at, at + len);
      at += len;
    }
    pending = pending.subarray(at);
  }
  let at = 0;
  while (at < pending.byteLength) {
    const len = cutPoint(pending.subarray(at), sizes, masks);
    yield pending.slice(at, at + len);
    at += len;
  }
}
