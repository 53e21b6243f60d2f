export interface FloatRows {
  /** Just past the closing bracket. */
  end: number;
  rows: number;
  /** The first row's length. */
  dim: number;
  /** rows * dim floats, when every row has `dim` of them. */
  values: Float32Array;
  /** The first row whose length is not `dim`, or -1; and that length. */
  badRow: number;
  badRowLength: number;
}

// From decimal text, so each is the exact double (all of 1e0..1e22 are).
const POW10 = Float64Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));
let scratch = new Float32Array(64 * 1024);

/**
 * Reads a JSON array of arrays of numbers (no whitespace, as Chroma writes embeddings)
 * at `bytes[pos]` straight into float32s, or returns null for anything else (the caller
 * then takes JSON.parse's path).
 *
 * Hand-written because JSON.parse needs a string of the bytes and builds an array per
 * row: this is 2.5 times faster on Chroma's pages (BENCHMARKS.md) and allocates one
 * Float32Array. Each number is converted as JSON.parse does (the nearest double), then
 * rounded to float32 as Float32Array stores do: with at most 2^53 as the digits' integer
 * and a power of ten up to 1e22, both exact doubles, one multiplication or division is
 * that nearest double (Clinger's fast path). Chroma writes float32s in at most 9 digits;
 * other numbers (subnormals, long digit strings) go through Number.
 */
export function parseFloatRows(bytes: Uint8Array, pos: number): FloatRows | null {
  if (bytes[pos] !== 0x5b /* [ */) return null;
  pos++;
  let count = 0;
  let rows = 0;
  let dim = -1;
  let badRow = -1;
  let badRowLength = 0;
  if (bytes[pos] !== 0x5d /* ] */) {
    for (;;) {
      if (bytes[pos] !== 0x5b) return null;
      pos++;
      const rowStart = count;
      for (;;) {
        // `| 0` keeps every byte read a small integer (0 past the end: not a digit, which
        // ends the number and fails the separator check); `d < 10` tests for a digit.
        const numberStart = pos;
        let c = bytes[pos]! | 0;
        let sign = 1;
        if (c === 0x2d /* - */) {
          sign = -1;
          c = bytes[++pos]! | 0;
        }
        let digits = 0;
        let exponent = 0;
        let d = (c - 0x30) >>> 0;
        if (d === 0) {
          c = bytes[++pos]! | 0;
        } else if (d < 10) {
          do {
            digits = digits * 10 + d;
            c = bytes[++pos]! | 0;
            d = (c - 0x30) >>> 0;
          } while (d < 10);
        } else {
          return null;
        }
        if (c === 0x2e /* . */) {
          c = bytes[++pos]! | 0;
          d = (c - 0x30) >>> 0;
          if (d >= 10) return null;
          const fractionStart = pos;
          do {
            digits = digits * 10 + d;
            c = bytes[++pos]! | 0;
            d = (c - 0x30) >>> 0;
          } while (d < 10);
          exponent = fractionStart - pos;
        }
        if ((c | 0x20) === 0x65 /* e E */) {
          c = bytes[++pos]! | 0;
          let exponentSign = 1;
          if (c === 0x2d) {
            exponentSign = -1;
            c = bytes[++pos]! | 0;
          } else if (c === 0x2b /* + */) {
            c = bytes[++pos]! | 0;
          }
          d = (c - 0x30) >>> 0;
          if (d >= 10) return null;
          let e = 0;
          do {
            e = e * 10 + d;
            c = bytes[++pos]! | 0;
            d = (c - 0x30) >>> 0;
          } while (d < 10 && e < 1000);
          exponent += exponentSign * e;
        }
        const value =
          digits <= Number.MAX_SAFE_INTEGER && exponent >= -22 && exponent <= 22
            ? sign * (exponent >= 0 ? digits * POW10[exponent]! : digits / POW10[-exponent]!)
            : Number(String.fromCharCode(...bytes.subarray(numberStart, pos))); // checked JSON syntax: Number reads it as JSON.parse does
        if (count === scratch.length) {
          const grown = new Float32Array(scratch.length * 2);
          grown.set(scratch);
          scratch = grown;
        }
        scratch[count++] = value;
        if (c === 0x2c /* , */) {
          pos++;
          continue;
        }
        if (c === 0x5d) {
          pos++;
          break;
        }
        return null;
      }
      const length = count - rowStart;
      if (dim < 0) dim = length;
      else if (length !== dim && badRow < 0) {
        badRow = rows;
        badRowLength = length;
      }
      rows++;
      if (bytes[pos] === 0x2c) {
        pos++;
        continue;
      }
      if (bytes[pos] === 0x5d) break;
      return null;
    }
  }
  return { end: pos + 1, rows, dim: Math.max(dim, 0), values: badRow < 0 ? scratch.slice(0, count) : new Float32Array(0), badRow, badRowLength };
}
