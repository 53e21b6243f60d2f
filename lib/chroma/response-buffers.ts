/** As many as a backup has reads in flight. */
const FREE_BUFFERS = 2;

/**
 * Buffers that response bodies are read into and given back once parsed, so that paging
 * through a collection reuses a few page-sized buffers instead of allocating one per page
 * (each would live until V8 next collects, which it does only after tens of megabytes).
 */
export class ResponseBuffers {
  private free: Uint8Array[] = [];

  async read(response: Response): Promise<Uint8Array> {
    const declared = Number(response.headers.get("content-length"));
    let buffer = this.take(Number.isSafeInteger(declared) && declared > 0 ? declared : 64 * 1024);
    let filled = 0;
    const reader = response.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.byteLength > buffer.byteLength) {
        const grown = new Uint8Array(Math.max(filled + value.byteLength, buffer.byteLength * 2));
        grown.set(buffer.subarray(0, filled));
        buffer = grown;
      }
      buffer.set(value, filled);
      filled += value.byteLength;
    }
    return buffer.subarray(0, filled);
  }

  /** Gives back a buffer `read` returned, once nothing refers to it. */
  release(bytes: Uint8Array): void {
    if (this.free.length < FREE_BUFFERS) this.free.push(new Uint8Array(bytes.buffer));
  }

  /** A free buffer of at least `size` bytes; free ones that are too small are dropped, not kept beside a new one. */
  private take(size: number): Uint8Array {
    const buffer = this.free.pop();
    return buffer && buffer.byteLength >= size ? buffer : new Uint8Array(size);
  }
}
