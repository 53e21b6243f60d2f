import { SnapshotCorruptError } from "../errors.js";

/**
 * Chunk header layout (docs/FORMAT.md). All integers little-endian u32.
 *
 * v2, written since format 2:
 *   0  "CBC2"                     magic
 *   4  records                    record count
 *   8  dim                        floats per embedding (0: no embeddings)
 *  12  embeddingCodec             0 = float32 as is; 1 = byte planes (byte-planes.ts)
 *  16  embeddingStoredBytes       length of the embedding section as stored
 *  20  textCodec                  0 = stored, 1 = deflate (raw, RFC 1951)
 *  24  textStoredBytes            length of the text section as stored
 *  28  textBytes                  length of the text section once decoded
 *  32  embeddings                 records * dim float32, as the codec says
 *   …  text                       UTF-8 lines (chunk-text.ts)
 *
 * v1 (format 1), still read: "CBC1", records, dim, textCodec, textStoredBytes,
 * textBytes, then float32 embeddings as is and the text section (24-byte header).
 */
const MAGIC_V1 = 0x31434243; // "CBC1" read as a little-endian u32
const MAGIC_V2 = 0x32434243; // "CBC2"
const HEADER_V1 = 24;
export const HEADER_V2 = 32;
export const CODEC_STORED = 0;
export const CODEC_DEFLATE = 1;
export const CODEC_BYTE_PLANES = 1;

/** What the manifest says of a chunk, checked against what the chunk says of itself. */
export interface ChunkExpectation {
  hash: string;
  records: number;
  decodedBytes: number;
  collection: string | null;
  /** The collection's embedding dimension from the manifest; checked when both are known. */
  dimension?: number | null;
}

export type Corrupt = (why: string, cause?: unknown) => never;

export const corruptFor =
  (expect: ChunkExpectation): Corrupt =>
  (why, cause) => {
    throw new SnapshotCorruptError(`chunk ${expect.hash}: ${why}`, expect.hash, expect.collection, { cause });
  };

/** A v2 header's fields, as encodeChunk writes them. */
export interface HeaderV2 {
  records: number;
  dim: number;
  embeddingCodec: number;
  embeddingStored: number;
  textCodec: number;
  textStored: number;
  textBytes: number;
}

export function writeHeaderV2(bytes: Uint8Array, h: HeaderV2): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_V2);
  view.setUint32(0, MAGIC_V2, true);
  view.setUint32(4, h.records, true);
  view.setUint32(8, h.dim, true);
  view.setUint32(12, h.embeddingCodec, true);
  view.setUint32(16, h.embeddingStored, true);
  view.setUint32(20, h.textCodec, true);
  view.setUint32(24, h.textStored, true);
  view.setUint32(28, h.textBytes, true);
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

/** A chunk's sections, located and checked against its own lengths and the manifest's claims. */
export interface ChunkLayout {
  n: number;
  dim: number;
  embeddingCodec: number;
  embeddings: Uint8Array;
  textCodec: number;
  text: Uint8Array;
  textBytes: number;
}

export function readLayout(bytes: Uint8Array, expect: ChunkExpectation, corrupt: Corrupt): ChunkLayout {
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
