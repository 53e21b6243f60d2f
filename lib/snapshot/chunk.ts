import { joinBytePlanes, highBytePlane, writeLowPlane } from "./byte-planes.js";
import { CODEC_BYTE_PLANES, CODEC_DEFLATE, CODEC_STORED, corruptFor, HEADER_V2, readLayout, writeHeaderV2, type ChunkExpectation, type ChunkLayout, type Corrupt } from "./chunk-layout.js";
import { checkText, decodeText, encodeText } from "./chunk-text.js";
import { deflateSection, InflateError, inflateSectionAsync, type InflateOptions } from "./codec.js";
import type { RecordBatch } from "./records.js";

/**
 * A chunk of records, encoded and decoded (docs/FORMAT.md): the header's layout is in
 * chunk-layout.ts, the embeddings' byte planes in byte-planes.ts, the text section's
 * lines in chunk-text.ts, compression in codec.ts.
 */

export { chunkSections, type ChunkExpectation } from "./chunk-layout.js";
export { decodeDigests, digestsKey, encodeDigests } from "./digests.js";
export { sha256, sha256Hex } from "./hash.js";

export type CompressionLevel = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;

export const chunkKey = (hash: string) => `chunks/${hash.slice(0, 2)}/${hash}`;

export interface EncodedChunk {
  bytes: Uint8Array;
  records: number;
  /** Size once decoded: header, embeddings as float32 and the text section uncompressed. */
  decodedBytes: number;
}

/** Both sections compress at once (in Node on the codec pool's threads: codec.ts). */
export async function encodeChunk(batch: RecordBatch, level: CompressionLevel = 6): Promise<EncodedChunk> {
  const n = batch.ids.length;
  let text = encodeText(batch);
  const textBytes = text.byteLength;
  const values = batch.embeddings.subarray(0, n * batch.dim);
  const floats = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  // Both buffers are this function's own: handed over to the pool, not copied (text is rebuilt in the rare case it is stored).
  const [deflated, packedHigh] = await Promise.all([deflateSection(text, { level, handOver: true }), deflateSection(highBytePlane(values), { level, huffmanOnly: true, handOver: true })]);
  // Each section stays as is when compression does not pay for itself.
  const textCodec = deflated.byteLength < textBytes ? CODEC_DEFLATE : CODEC_STORED;
  if (textCodec === CODEC_STORED && text.byteLength !== textBytes) text = encodeText(batch);
  const storedText = textCodec === CODEC_DEFLATE ? deflated : text;
  const lowBytes = values.length * 3;
  const embeddingCodec = lowBytes + packedHigh.byteLength < floats.byteLength ? CODEC_BYTE_PLANES : CODEC_STORED;
  const embeddingStored = embeddingCodec === CODEC_BYTE_PLANES ? lowBytes + packedHigh.byteLength : floats.byteLength;

  const bytes = new Uint8Array(HEADER_V2 + embeddingStored + storedText.byteLength);
  writeHeaderV2(bytes, { records: n, dim: batch.dim, embeddingCodec, embeddingStored, textCodec, textStored: storedText.byteLength, textBytes });
  if (embeddingCodec === CODEC_BYTE_PLANES) {
    // The low plane is written in place, not built apart and copied (less memory to collect).
    writeLowPlane(values, bytes, HEADER_V2);
    bytes.set(packedHigh, HEADER_V2 + lowBytes);
  } else {
    bytes.set(floats, HEADER_V2);
  }
  bytes.set(storedText, HEADER_V2 + embeddingStored);
  return { bytes, records: n, decodedBytes: HEADER_V2 + floats.byteLength + textBytes };
}

/**
 * A section inflated to exactly `size` bytes (codec.ts: a bomb stops within one step; in
 * Node a large one on a pool thread); wrong bytes are corruption, a resource limit
 * (ResourceLimitError) passes through as is.
 */
async function inflateExactly(stored: Uint8Array, size: number, what: string, corrupt: Corrupt, options?: InflateOptions): Promise<Uint8Array> {
  try {
    return await inflateSectionAsync(stored, size, options);
  } catch (err) {
    if (err instanceof InflateError) return corrupt(`${what} ${err.message}`, err);
    throw err;
  }
}

/** The high-byte plane, inflated (both sections inflate at once: in Node, on two pool threads). */
function inflateHighPlane(layout: ChunkLayout, corrupt: Corrupt, options?: InflateOptions): Promise<Uint8Array> | null {
  const values = layout.n * layout.dim;
  return layout.embeddingCodec === CODEC_STORED ? null : inflateExactly(layout.embeddings.subarray(values * 3), values, "embedding high-byte plane", corrupt, options);
}

function inflateText(layout: ChunkLayout, corrupt: Corrupt, options?: InflateOptions): Promise<Uint8Array> {
  return layout.textCodec === CODEC_STORED ? Promise.resolve(layout.text) : inflateExactly(layout.text, layout.textBytes, "text section", corrupt, options);
}

/**
 * Decodes a chunk whose sha256 was already checked, trusting nothing else in it: every
 * length is checked against the bytes and the manifest's claims, and inflation stops
 * at the claimed size, so a crafted chunk cannot make it allocate more.
 */
export async function decodeChunk(bytes: Uint8Array, expect: ChunkExpectation): Promise<RecordBatch> {
  const corrupt = corruptFor(expect);
  const layout = readLayout(bytes, expect, corrupt);
  const { n, dim } = layout;
  const [high, text] = await Promise.all([inflateHighPlane(layout, corrupt), inflateText(layout, corrupt)]);
  const embeddings = new Float32Array(n * dim);
  if (high) joinBytePlanes(layout.embeddings.subarray(0, n * dim * 3), high, new Uint32Array(embeddings.buffer));
  else new Uint8Array(embeddings.buffer).set(layout.embeddings);
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
  // A verify's thread only waits meanwhile: it inflates too when the pool is busy.
  const [, text] = await Promise.all([inflateHighPlane(layout, corrupt, { helpWhenBusy: true }), inflateText(layout, corrupt, { helpWhenBusy: true })]);
  checkText(text, layout.n, corrupt);
  return layout.n;
}
