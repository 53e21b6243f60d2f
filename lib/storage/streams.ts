/** A stream of `bytes`, in one piece. */
export function bytesToStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (bytes.byteLength > 0) controller.enqueue(bytes);
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

/** Hex sha256 through WebCrypto, which every runtime has (the drivers' body checksums). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let hex = "";
  for (const byte of digest) hex += byte.toString(16).padStart(2, "0");
  return hex;
}
