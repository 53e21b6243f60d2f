import { Buffer, isUtf8 } from "node:buffer";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A column of strings and nulls (a page's or a chunk's documents) kept as JSON text in
 * UTF-8, the form it arrives in and is stored in: a backup copies Chroma's bytes into
 * chunks and hashes them without building a JS string per document and encoding it back
 * (measured in BENCHMARKS.md: a fifth of the backup's own CPU).
 *
 * `bytes` holds the elements' JSON texts separated by commas (a JSON array without its
 * brackets); element i is `bytes[starts[i], starts[i + 1] - 1)`, and `starts[n]` is
 * `bytes.length + 1`.
 */
export class JsonColumn {
  constructor(
    readonly bytes: Uint8Array,
    private readonly starts: Uint32Array,
  ) {}

  static readonly empty = new JsonColumn(new Uint8Array(0), Uint32Array.of(1));

  get length(): number {
    return this.starts.length - 1;
  }

  /** Element i's JSON text (`null` or a string literal). */
  text(i: number): Uint8Array {
    return this.bytes.subarray(this.starts[i]!, this.starts[i + 1]! - 1);
  }

  textLength(i: number): number {
    return this.starts[i + 1]! - 1 - this.starts[i]!;
  }

  /** The same elements in bytes of their own (for a column read out of a buffer that is reused). */
  copy(): JsonColumn {
    return new JsonColumn(new Uint8Array(this.bytes), this.starts); // (Buffer.slice would not copy)
  }

  /** Elements [start, end), sharing these bytes. */
  slice(start: number, end: number): JsonColumn {
    if (start === 0 && end === this.length) return this;
    if (start >= end) return JsonColumn.empty;
    const from = this.starts[start]!;
    const starts = this.starts.slice(start, end + 1);
    for (let i = 0; i < starts.length; i++) starts[i]! -= from;
    return new JsonColumn(this.bytes.subarray(from, this.starts[end]! - 1), starts);
  }

  /** The elements at `indexes`, in that order. */
  pick(indexes: number[]): JsonColumn {
    return JsonColumn.concat(indexes.map((i) => this.slice(i, i + 1)));
  }

  values(): (string | null)[] {
    return JSON.parse(`[${decoder.decode(this.bytes)}]`) as (string | null)[];
  }

  static concat(columns: JsonColumn[]): JsonColumn {
    const parts = columns.filter((c) => c.length > 0);
    if (parts.length === 0) return JsonColumn.empty;
    if (parts.length === 1) return parts[0]!;
    const size = parts.reduce((sum, c) => sum + c.bytes.byteLength + 1, 0);
    const bytes = new Uint8Array(Math.max(0, size - 1));
    const starts = new Uint32Array(parts.reduce((n, c) => n + c.length, 0) + 1);
    let offset = 0;
    let k = 0;
    for (const c of parts) {
      if (offset > 0) bytes[offset - 1] = 0x2c; // ,
      bytes.set(c.bytes, offset);
      for (let i = 0; i < c.length; i++) starts[k++] = offset + c.starts[i]!;
      offset += c.bytes.byteLength + 1;
    }
    starts[k] = offset;
    return new JsonColumn(bytes, starts);
  }

  static fromValues(values: (string | null)[]): JsonColumn {
    const scanned = scanStringColumn(encoder.encode(JSON.stringify(values)), 0);
    if (!scanned) throw new TypeError("not a column of strings and nulls");
    return scanned.column;
  }
}

/** UTF-8 of `head`, then `middle` as it is, then UTF-8 of `tail`, in one buffer. */
export function utf8Around(head: string, middle: Uint8Array, tail: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Buffer.byteLength(head, "utf8") + middle.byteLength + Buffer.byteLength(tail, "utf8"));
  writeUtf8Around(out, head, middle, tail);
  return out;
}

/** Writes what utf8Around returns at the start of `out` (large enough); returns its length. */
export function writeUtf8Around(out: Uint8Array, head: string, middle: Uint8Array, tail: string): number {
  let o = encoder.encodeInto(head, out).written;
  out.set(middle, o);
  o += middle.byteLength;
  return o + encoder.encodeInto(tail, out.subarray(o)).written;
}

export interface ScannedColumn {
  column: JsonColumn;
  /** Just past the closing bracket. */
  end: number;
  /** Every element is exactly as JSON.stringify writes it (no optional escapes such as `\/` or `\u00e9`). */
  canonical: boolean;
}

const HEX = new Int8Array(256).fill(-1);
for (let d = 0; d < 16; d++) {
  HEX["0123456789abcdef".charCodeAt(d)] = d;
  HEX["0123456789ABCDEF".charCodeAt(d)] = d;
}
const isLowerHex = (b: number) => (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66);

/**
 * Reads a JSON array of strings and nulls (no whitespace, as Chroma and JSON.stringify
 * write it) starting at `bytes[pos]`, checking it as JSON.parse would: escapes, no raw
 * control characters, valid UTF-8. Null when it is anything else. Hand-written because
 * no parser returns where each element's text is; it is one pass over the bytes.
 */
export function scanStringColumn(bytes: Uint8Array, pos: number): ScannedColumn | null {
  if (bytes[pos] !== 0x5b /* [ */) return null;
  const first = pos + 1;
  const starts: number[] = [];
  let canonical = true;
  let i = first;
  if (bytes[i] !== 0x5d /* ] */) {
    for (;;) {
      starts.push(i - first);
      const b = bytes[i];
      if (b === 0x6e /* n */) {
        if (bytes[i + 1] !== 0x75 || bytes[i + 2] !== 0x6c || bytes[i + 3] !== 0x6c) return null;
        i += 4;
      } else if (b === 0x22 /* " */) {
        i++;
        for (;;) {
          const c = bytes[i];
          if (c === 0x22) break;
          if (c === undefined || c < 0x20) return null;
          if (c !== 0x5c /* \ */) {
            i++;
            continue;
          }
          const e = bytes[i + 1];
          if (e === 0x22 || e === 0x5c || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
            i += 2;
          } else if (e === 0x2f /* / */) {
            canonical = false;
            i += 2;
          } else if (e === 0x75 /* u */) {
            let code = 0;
            for (let k = 2; k < 6; k++) {
              const d = HEX[bytes[i + k] ?? 0]!;
              if (d < 0) return null;
              code = code * 16 + d;
              if (!isLowerHex(bytes[i + k]!)) canonical = false;
            }
            // JSON.stringify writes \u only for control characters without a short form
            // (and lone surrogates, which are left to the general path).
            if (code >= 0x20 || code === 0x08 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d) canonical = false;
            i += 6;
          } else {
            return null;
          }
        }
        i++;
      } else {
        return null;
      }
      if (bytes[i] === 0x2c /* , */) {
        i++;
        continue;
      }
      if (bytes[i] === 0x5d) break;
      return null;
    }
  }
  const region = bytes.subarray(first, i);
  if (!isUtf8(region)) return null;
  starts.push(i - first + 1);
  return { column: new JsonColumn(region, Uint32Array.from(starts)), end: i + 1, canonical };
}
