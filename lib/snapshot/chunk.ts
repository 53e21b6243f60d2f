import { Buffer, isUtf8 } from "node:buffer";
import { createHash } from "node:crypto";
import { SnapshotCorruptError } from "../errors.js";
import { scanStringColumn, utf8Around } from "../json/json-column.js";
import { deflateSection, InflateError, inflateSection } from "./codec.js";
import type { RecordBatch } from "./records.js";

/**
 * Chunk format (docs/FORMAT.md). All integers little-endian u32.
 *
 * v2, written since format 2:
 *   0  "CBC2"                     magic
 *   4  records                    record count
 *   8  dim                        floats per embedding (0: no embeddings)
 *  12  embeddingCodec             0 = float32 as is; 1 = byte planes (below)
 *  16  embeddingStoredBytes       length of the embedding section as stored
 *  20  textCodec                  0 = stored, 1 = deflate (raw, RFC 1951)
 *  24  textStoredBytes            length of the text section as stored
 *  28  textBytes                  length of the text section once decoded
 *  32  embeddings                 records * dim float32, as the codec says
 *   …  text                       UTF-8 lines: JSON ids, JSON documents, JSON uris,
 *                                 then one line per record: its metadata as JSON
 *
 * Byte planes: the low three bytes of every float32, packed (records * dim * 3 bytes,
 * stored: mantissa bits are noise to a compressor), then the high bytes (sign and most
 * of the exponent) deflated with Huffman coding only. Unit-scale embeddings use a
 * handful of exponents, so that plane shrinks to about a third, a sixth of the floats'
 * size, for a few milliseconds per megabyte; deflating the whole float bytes saves less
 * and costs far more (measured in BENCHMARKS.md).
 *
 * v1 (format 1), still read: "CBC1", records, dim, textCodec, textStoredBytes,
 * textBytes, then float32 embeddings as is and the text section (24-byte header).
 */
const MAGIC_V1 = 0x31434243; // "CBC1" read as a little-endian u32
const MAGIC_V2 = 0x32434243; // "CBC2"
const HEADER_V1 = 24;
const HEADER_V2 = 32;
const CODEC_STORED = 0;
const CODEC_DEFLATE = 1;
const CODEC_BYTE_PLANES = 1;
// ignoreBOM: true keeps a leading U+FEFF as a character, so the bytes decode to exactly what they hold.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export type CompressionLevel = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;

export interface EncodedChunk {
  bytes: Uint8Array;
  records: number;
  /** Size once decoded: header, embeddings as float32 and the text section uncompressed. */
  decodedBytes: number;
}

/** Compression goes through codec.ts (node:zlib's thread pool in Node, fflate in a Worker: the reasons are there). */
export async function encodeChunk(batch: RecordBatch, level: CompressionLevel = 6): Promise<EncodedChunk> {
  const n = batch.ids.length;
  const text = encodeText(batch);
  const values = batch.embeddings.subarray(0, n * batch.dim);
  const floats = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const high = highBytePlane(values);
  const [deflated, packedHigh] = await Promise.all([deflateSection(text, { level }), deflateSection(high, { level, huffmanOnly: true })]);
  // Each section stays as is when compression does not pay for itself.
  const textCodec = deflated.byteLength < text.byteLength ? CODEC_DEFLATE : CODEC_STORED;
  const storedText = textCodec === CODEC_DEFLATE ? deflated : text;
  const lowBytes = values.length * 3;
  const embeddingCodec = lowBytes + packedHigh.byteLength < floats.byteLength ? CODEC_BYTE_PLANES : CODEC_STORED;
  const embeddingStored = embeddingCodec === CODEC_BYTE_PLANES ? lowBytes + packedHigh.byteLength : floats.byteLength;

  const bytes = new Uint8Array(HEADER_V2 + embeddingStored + storedText.byteLength);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MAGIC_V2, true);
  view.setUint32(4, n, true);
  view.setUint32(8, batch.dim, true);
  view.setUint32(12, embeddingCodec, true);
  view.setUint32(16, embeddingStored, true);
  view.setUint32(20, textCodec, true);
  view.setUint32(24, storedText.byteLength, true);
  view.setUint32(28, text.byteLength, true);
  if (embeddingCodec === CODEC_BYTE_PLANES) {
    // The low plane is written in place, not built apart and copied (less memory to collect).
    writeLowPlane(values, bytes, HEADER_V2);
    bytes.set(packedHigh, HEADER_V2 + lowBytes);
  } else {
    bytes.set(floats, HEADER_V2);
  }
  bytes.set(storedText, HEADER_V2 + embeddingStored);
  return { bytes, records: n, decodedBytes: HEADER_V2 + floats.byteLength + text.byteLength };
}

/** The text section: the documents column's bytes as they are, between the other lines encoded. */
function encodeText(batch: RecordBatch): Uint8Array {
  const metadatas = batch.metadatas.length > 0 ? `\n${batch.metadatas.join("\n")}` : "";
  return utf8Around(`${JSON.stringify(batch.ids)}\n[`, batch.documents.bytes, `]\n${JSON.stringify(batch.uris)}${metadatas}`);
}

/** The high byte of each float32 (sign and most of the exponent). */
function highBytePlane(floats: Float32Array): Uint8Array {
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
function writeLowPlane(floats: Float32Array, out: Uint8Array, at: number): void {
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

export interface ChunkExpectation {
  hash: string;
  records: number;
  decodedBytes: number;
  collection: string | null;
  /** The collection's embedding dimension from the manifest; checked when both are known. */
  dimension?: number | null;
}

type Corrupt = (why: string, cause?: unknown) => never;

/**
 * A section inflated to exactly `size` bytes (codec.ts: a bomb stops within one step);
 * wrong bytes are corruption, a resource limit (ResourceLimitError) passes through as is.
 */
function inflateExactly(stored: Uint8Array, size: number, what: string, corrupt: Corrupt): Uint8Array {
  try {
    return inflateSection(stored, size);
  } catch (err) {
    if (err instanceof InflateError) return corrupt(`${what} ${err.message}`, err);
    throw err;
  }
}

/** A chunk's sections, located and checked against its own lengths and the manifest's claims. */
interface ChunkLayout {
  n: number;
  dim: number;
  embeddingCodec: number;
  embeddings: Uint8Array;
  textCodec: number;
  text: Uint8Array;
  textBytes: number;
}

/** A chunk header's fields, v1 or v2, unchecked; null when the bytes are not a chunk. */
function readHeader(bytes: Uint8Array) {
  if (bytes.byteLength < HEADER_V1) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, true);
  if (magic !== MAGIC_V1 && (magic !== MAGIC_V2 || bytes.byteLength < HEADER_V2)) return null;
  const v2 = magic === MAGIC_V2;
  const n = view.getUint32(4, true);
  const dim = view.getUint32(8, true);
  return {
    header: v2 ? HEADER_V2 : HEADER_V1,
    n,
    dim,
    embeddingCodec: v2 ? view.getUint32(12, true) : CODEC_STORED,
    embeddingStored: v2 ? view.getUint32(16, true) : n * dim * 4,
    textCodec: view.getUint32(v2 ? 20 : 12, true),
    textStored: view.getUint32(v2 ? 24 : 16, true),
    textBytes: view.getUint32(v2 ? 28 : 20, true),
  };
}

/** The stored sizes of a chunk's header, embedding and text sections, as its header states them (for reports). */
export function chunkSections(bytes: Uint8Array): { header: number; embeddings: number; text: number } | null {
  const h = readHeader(bytes);
  return h && { header: h.header, embeddings: h.embeddingStored, text: h.textStored };
}

function readLayout(bytes: Uint8Array, expect: ChunkExpectation, corrupt: Corrupt): ChunkLayout {
  const fields = readHeader(bytes);
  if (!fields) {
    const magic = bytes.byteLength >= 4 ? new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) : 0;
    return corrupt(bytes.byteLength >= HEADER_V1 && magic !== MAGIC_V1 && magic !== MAGIC_V2 ? "not a chunk (bad magic)" : "shorter than its header");
  }
  const { header, n, dim, embeddingCodec, embeddingStored, textCodec, textStored, textBytes } = fields;
  const embeddingBytes = n * dim * 4;
  if (n !== expect.records) corrupt(`holds ${n} records, the manifest says ${expect.records}`);
  if (header + embeddingBytes + textBytes !== expect.decodedBytes) corrupt(`decodes to ${header + embeddingBytes + textBytes} bytes, the manifest says ${expect.decodedBytes}`);
  if (header + embeddingStored + textStored !== bytes.byteLength) corrupt("section lengths do not add up to its size");
  if (embeddingCodec !== CODEC_STORED && embeddingCodec !== CODEC_BYTE_PLANES) corrupt(`unknown embedding codec ${embeddingCodec}`);
  if (textCodec !== CODEC_STORED && textCodec !== CODEC_DEFLATE) corrupt(`unknown text codec ${textCodec}`);
  if (expect.dimension && dim !== 0 && dim !== expect.dimension) corrupt(`has embeddings of ${dim} floats, the collection has ${expect.dimension}`);
  if (embeddingCodec === CODEC_STORED && embeddingStored !== embeddingBytes) corrupt("stored embedding length mismatch");
  if (embeddingCodec === CODEC_BYTE_PLANES && embeddingStored < n * dim * 3) corrupt("embedding section is shorter than its low bytes");
  if (textCodec === CODEC_STORED && textStored !== textBytes) corrupt("stored text length mismatch");
  return {
    n,
    dim,
    embeddingCodec,
    embeddings: bytes.subarray(header, header + embeddingStored),
    textCodec,
    text: bytes.subarray(header + embeddingStored),
    textBytes,
  };
}

const corruptFor =
  (expect: ChunkExpectation): Corrupt =>
  (why, cause) => {
    throw new SnapshotCorruptError(`chunk ${expect.hash}: ${why}`, expect.hash, expect.collection, { cause });
  };

/**
 * Decodes a chunk whose sha256 was already checked, trusting nothing else in it: every
 * length is checked against the bytes and the manifest's claims, and inflation stops
 * at the claimed size, so a crafted chunk cannot make it allocate more.
 */
export function decodeChunk(bytes: Uint8Array, expect: ChunkExpectation): RecordBatch {
  const corrupt = corruptFor(expect);
  const layout = readLayout(bytes, expect, corrupt);
  const { n, dim } = layout;
  const embeddings = new Float32Array(n * dim);
  if (layout.embeddingCodec === CODEC_STORED) {
    new Uint8Array(embeddings.buffer).set(layout.embeddings);
  } else {
    const high = inflateExactly(layout.embeddings.subarray(n * dim * 3), n * dim, "embedding high-byte plane", corrupt);
    joinBytePlanes(layout.embeddings.subarray(0, n * dim * 3), high, new Uint32Array(embeddings.buffer));
  }
  const text = layout.textCodec === CODEC_STORED ? layout.text : inflateExactly(layout.text, layout.textBytes, "text section", corrupt);
  return { ...decodeText(text, n, corrupt), dim, embeddings };
}

/**
 * What a verify checks, without building the records: every header length, both
 * sections inflate (codec.ts) to exactly their sizes, and the text is UTF-8
 * framed as `n + 3` lines with well-formed id and uri columns. The embeddings need no
 * more than their length (any bytes are floats). The documents and metadata lines are
 * left to decodeChunk: with the chunk's sha256 already checked, they are the bytes the
 * writer wrote, and parsing them would double the cost. Returns the record count.
 */
export async function checkChunk(bytes: Uint8Array, expect: ChunkExpectation): Promise<number> {
  const corrupt = corruptFor(expect);
  const layout = readLayout(bytes, expect, corrupt);
  const { n, dim } = layout;
  if (layout.embeddingCodec !== CODEC_STORED) inflateExactly(layout.embeddings.subarray(n * dim * 3), n * dim, "embedding high-byte plane", corrupt);
  const text = layout.textCodec === CODEC_STORED ? layout.text : inflateExactly(layout.text, layout.textBytes, "text section", corrupt);
  checkText(text, n, corrupt);
  return n;
}

function checkText(bytes: Uint8Array, n: number, corrupt: Corrupt): void {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // Buffer's indexOf is native
  if (!isUtf8(text)) corrupt("text section is not UTF-8");
  const ends: number[] = [];
  for (let i = text.indexOf(0x0a); i !== -1; i = text.indexOf(0x0a, i + 1)) ends.push(i);
  if (ends.length + 1 !== 3 + n) corrupt(`text section has ${ends.length + 1} lines, expected ${3 + n}`);
  const line = (k: number) => decoder.decode(text.subarray(k === 0 ? 0 : ends[k - 1]! + 1, ends[k]));
  let ids: unknown, uris: unknown;
  try {
    ids = JSON.parse(line(0));
    uris = JSON.parse(line(2));
  } catch (err) {
    return corrupt("text section is not valid JSON", err);
  }
  if (!isColumn(ids, n, false)) corrupt("ids column is malformed");
  if (!isColumn(uris, n, true)) corrupt("uris column is malformed");
}

const isColumn = (v: unknown, n: number, nullable: boolean): v is (string | null)[] =>
  Array.isArray(v) && v.length === n && v.every((x) => typeof x === "string" || (nullable && x === null));

function joinBytePlanes(low: Uint8Array, high: Uint8Array, out: Uint32Array): void {
  const count = out.length;
  const whole = count - (count % 4);
  // The mirror of splitBytePlanes, four floats at a time where the planes are word-aligned.
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

function decodeText(bytes: Uint8Array, n: number, corrupt: Corrupt): Pick<RecordBatch, "ids" | "documents" | "uris" | "metadatas"> {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // Buffer's indexOf is native
  const first = text.indexOf(0x0a);
  const second = first < 0 ? -1 : text.indexOf(0x0a, first + 1);
  const third = second < 0 ? -1 : text.indexOf(0x0a, second + 1);
  if (third < 0 && n > 0) corrupt(`text section has fewer than ${3 + n} lines`);
  let ids: unknown, uris: unknown, metadatas: string[];
  try {
    ids = JSON.parse(decoder.decode(text.subarray(0, first)));
    uris = JSON.parse(decoder.decode(text.subarray(second + 1, third < 0 ? text.byteLength : third)));
    metadatas = third < 0 ? [] : decoder.decode(text.subarray(third + 1)).split("\n");
  } catch (err) {
    return corrupt(err instanceof SyntaxError ? "text section is not valid JSON" : "text section is not UTF-8", err);
  }
  if (metadatas.length !== n) corrupt(`text section has ${3 + metadatas.length} lines, expected ${3 + n}`);
  // The documents line is checked as JSON.parse would and kept as bytes (docs: JsonColumn).
  const documents = scanStringColumn(text, first + 1);
  if (!documents || documents.end !== second || documents.column.length !== n) corrupt("documents column is malformed");
  if (!isColumn(ids, n, false)) corrupt("ids column is malformed");
  if (!isColumn(uris, n, true)) corrupt("uris column is malformed");
  return { ids: ids as string[], documents: documents!.column, uris: uris as (string | null)[], metadatas };
}

/**
 * The record-digest sidecar of a chunk (`digests/<aa>/<chunk sha256>`): 16 bytes per
 * record, in chunk order, so the next backup can tell which records it already has
 * without downloading chunks. Self-checking: a sha256 of the rest closes it.
 *
 *   0 "CBD1"   4 count   8 count*16 digest bytes   then sha256 of all before it
 */
const DIGEST_MAGIC = 0x31444243; // "CBD1"

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

/**
 * sha256 through node:crypto, which Workers provide too (nodejs_compat). Synchronous and
 * about four times faster here than WebCrypto's digest for the many small record digests
 * (measured: 20,000 x 2 KiB in 76 ms against 318 ms), and three times for whole chunks.
 */
export function sha256(bytes: Uint8Array): Uint8Array {
  return createHash("sha256").update(bytes).digest();
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export const chunkKey = (hash: string) => `chunks/${hash.slice(0, 2)}/${hash}`;
export const digestsKey = (hash: string) => `digests/${hash.slice(0, 2)}/${hash}`;
