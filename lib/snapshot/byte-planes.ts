/**
 * The embeddings' byte planes (docs/FORMAT.md, embedding codec 1): the low three bytes of
 * every float32, packed (mantissa bits: noise to a compressor, stored as they are), and
 * the high byte (sign and most of the exponent: a handful of values, deflated).
 */

/** The high byte of each float32 (sign and most of the exponent), in a buffer of its own. */
export function highBytePlane(floats: Float32Array): Uint8Array {
  const count = floats.length;
  const words = new Uint32Array(floats.buffer, floats.byteOffset, count);
  const high = new Uint8Array(count + 3); // +3: room to write the last word whole
  const highWords = new Uint32Array(high.buffer, 0, Math.floor(high.byteLength / 4));
  const whole = count - (count % 4);
  for (let i = 0; i < whole; i += 4) {
    highWords[i >>> 2] = (words[i]! >>> 24) | ((words[i + 1]! >>> 24) << 8) | ((words[i + 2]! >>> 24) << 16) | (words[i + 3]! & 0xff000000);
  }
  for (let i = whole; i < count; i++) high[i] = words[i]! >>> 24;
  return high.subarray(0, count);
}

/**
 * The low three bytes of each float32, packed, written into `out` at `at` (a multiple of
 * 4 in a buffer starting at its ArrayBuffer's start). Four floats at a time: their low
 * bytes make three whole words (a third of the stores of a byte-by-byte loop).
 */
export function writeLowPlane(floats: Float32Array, out: Uint8Array, at: number): void {
  const count = floats.length;
  const words = new Uint32Array(floats.buffer, floats.byteOffset, count);
  const outWords = new Uint32Array(out.buffer, at, Math.floor((count * 3) / 4));
  const whole = count - (count % 4);
  for (let i = 0, o = 0; i < whole; i += 4, o += 3) {
    const a = words[i]!;
    const b = words[i + 1]!;
    const c = words[i + 2]!;
    const d = words[i + 3]!;
    outWords[o] = (a & 0xffffff) | (b << 24);
    outWords[o + 1] = ((b >>> 8) & 0xffff) | (c << 16);
    outWords[o + 2] = ((c >>> 16) & 0xff) | (d << 8);
  }
  for (let i = whole; i < count; i++) {
    const w = words[i]!;
    out[at + 3 * i] = w;
    out[at + 3 * i + 1] = w >>> 8;
    out[at + 3 * i + 2] = w >>> 16;
  }
}

/** The floats' words from the two planes: the mirror of writeLowPlane and highBytePlane. */
export function joinBytePlanes(low: Uint8Array, high: Uint8Array, out: Uint32Array): void {
  const count = out.length;
  const whole = count - (count % 4);
  // Four floats at a time where the planes are word-aligned.
  if (low.byteOffset % 4 === 0 && high.byteOffset % 4 === 0) {
    const lowWords = new Uint32Array(low.buffer, low.byteOffset, (whole / 4) * 3);
    const highWords = new Uint32Array(high.buffer, high.byteOffset, whole / 4);
    for (let i = 0, o = 0; i < whole; i += 4, o += 3) {
      const x = lowWords[o]!;
      const y = lowWords[o + 1]!;
      const z = lowWords[o + 2]!;
      const h = highWords[i >>> 2]!;
      out[i] = (x & 0xffffff) | (h << 24);
      out[i + 1] = (x >>> 24) | ((y & 0xffff) << 8) | (((h >>> 8) & 0xff) << 24);
      out[i + 2] = (y >>> 16) | ((z & 0xff) << 16) | (((h >>> 16) & 0xff) << 24);
      out[i + 3] = (z >>> 8) | (h & 0xff000000);
    }
  } else {
    for (let i = 0; i < whole; i++) out[i] = (low[3 * i]! | (low[3 * i + 1]! << 8) | (low[3 * i + 2]! << 16) | (high[i]! << 24)) >>> 0;
  }
  for (let i = whole; i < count; i++) out[i] = (low[3 * i]! | (low[3 * i + 1]! << 8) | (low[3 * i + 2]! << 16) | (high[i]! << 24)) >>> 0;
}
