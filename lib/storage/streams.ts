import type { Body } from "./types.js";

export function bodyToStream(body: Body): ReadableStream<Uint8Array> {
  if (!(body instanceof Uint8Array)) return body;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (body.byteLength > 0) controller.enqueue(body);
      controller.close();
    },
  });
}

/**
 * A stream went past the byte limit its reader gave readAll: the object is larger than
 * the caller allows. A RangeError still, for callers that catch those.
 */
export class TooLargeError extends RangeError {
  override name = "TooLargeError";
  constructor(readonly maxBytes: number) {
    super(`stream is larger than ${maxBytes} bytes`);
  }
}

/** Concatenates a stream. With `maxBytes`, throws TooLargeError as soon as the total would pass it. */
export async function readAll(stream: ReadableStream<Uint8Array>, maxBytes = Infinity): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) throw new TooLargeError(maxBytes);
      parts.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return concatBytes(parts, total);
}

export function concatBytes(parts: readonly Uint8Array[], total = parts.reduce((n, p) => n + p.byteLength, 0)): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

/**
 * Regroups a stream into pieces of exactly `size` bytes (the last one may be shorter),
 * for multipart uploads whose parts must have a minimum size. Holds at most one piece.
 */
export async function* fixedSizePieces(stream: ReadableStream<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let buffer = new Uint8Array(size);
  let filled = 0;
  let finished = false;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      let offset = 0;
      while (offset < value.byteLength) {
        const n = Math.min(size - filled, value.byteLength - offset);
        buffer.set(value.subarray(offset, offset + n), filled);
        filled += n;
        offset += n;
        if (filled === size) {
          yield buffer;
          buffer = new Uint8Array(size);
          filled = 0;
        }
      }
    }
    finished = true;
    if (filled > 0) yield buffer.subarray(0, filled);
  } finally {
    // A consumer that stops early (a failed upload) cancels the source, so it stops producing.
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** Hex sha256 through WebCrypto, which every runtime has (the drivers' body checksums). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let hex = "";
  for (const byte of digest) hex += byte.toString(16).padStart(2, "0");
  return hex;
}
