import { utf8Around } from "../json/json-column.js";
import type { RecordBatch } from "../snapshot/records.js";

function base64(bytes: Uint8Array): string {
  const B = (globalThis as { Buffer?: { from(b: ArrayBufferLike, o: number, l: number): { toString(e: string): string } } }).Buffer;
  if (B) return B.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * The add/upsert body. Embeddings go as base64 float32 (what the official client sends
 * when the server supports it: exact, and far smaller than decimal text); metadata as its
 * stored JSON text, so floats keep their type; documents as the JSON text they are kept in.
 */
export function writeBody(batch: RecordBatch): Uint8Array<ArrayBuffer> {
  const embeddings: string[] = [];
  if (batch.dim > 0) {
    for (let i = 0; i < batch.ids.length; i++) {
      const bytes = new Uint8Array(batch.embeddings.buffer, batch.embeddings.byteOffset + i * batch.dim * 4, batch.dim * 4);
      embeddings.push(`"${base64(bytes)}"`);
    }
  }
  return utf8Around(
    `{"ids":${JSON.stringify(batch.ids)},"embeddings":${batch.dim > 0 ? `[${embeddings.join(",")}]` : "null"},"documents":[`,
    batch.documents.bytes,
    `],"uris":${JSON.stringify(batch.uris)},"metadatas":[${batch.metadatas.join(",")}]}`,
  );
}
