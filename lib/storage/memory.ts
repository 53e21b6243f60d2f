import { notFound, StorageError, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { bodyToStream, readAll, TooLargeError } from "./streams.js";
import type { Body, ObjectInfo, ObjectStat, Storage } from "./types.js";

interface StoredObject {
  bytes: Uint8Array;
  lastModified: Date;
}

export interface MemoryStorageOptions {
  /** A quota: a write that would take the bytes held past it fails with kind `full`. */
  maxBytes?: number;
}

/** Objects held in a Map: for tests and dry runs. Writes are atomic (buffer, then set). */
export function memoryStorage(options: MemoryStorageOptions = {}): Storage {
  const driver = "memory";
  const objects = new Map<string, StoredObject>();
  const maxBytes = options.maxBytes ?? Infinity;

  /** The body's bytes, if they fit in the quota beside everything but `key`'s current object. */
  async function accept(operation: StorageOperation, key: string, body: Body): Promise<Uint8Array> {
    let held = 0;
    for (const [k, object] of objects) if (k !== key) held += object.bytes.byteLength;
    const room = Math.max(0, maxBytes - held);
    const full = (needed: string) =>
      new StorageError(`memory: ${operation} "${key}" failed: the quota of ${maxBytes} bytes is full: ${held} bytes held, ${needed} needed`, { driver, operation, key, kind: "full" });
    if (body instanceof Uint8Array) {
      if (body.byteLength > room) throw full(String(body.byteLength));
      return body.slice();
    }
    try {
      return await readAll(body, room);
    } catch (err) {
      if (!(err instanceof TooLargeError)) throw err;
      await body.cancel().catch(() => {});
      throw full(`more than ${room}`);
    }
  }

  async function put(key: string, body: Body): Promise<void> {
    assertValidKey(driver, "put", key);
    const bytes = await accept("put", key, body);
    objects.set(key, { bytes, lastModified: new Date() });
  }

  function lookup(operation: "get" | "head", key: string): StoredObject {
    assertValidKey(driver, operation, key);
    const object = objects.get(key);
    if (!object) throw notFound(driver, operation, key);
    return object;
  }

  return {
    driver,
    capabilities: { atomicPutIfAbsent: true },
    put,
    async putIfAbsent(key, body) {
      assertValidKey(driver, "putIfAbsent", key);
      // Claim the key synchronously, so concurrent callers see it before any await.
      if (objects.has(key)) return false;
      const placeholder = { bytes: new Uint8Array(0), lastModified: new Date() };
      objects.set(key, placeholder);
      try {
        const bytes = await accept("putIfAbsent", key, body);
        objects.set(key, { bytes, lastModified: new Date() });
        return true;
      } catch (err) {
        if (objects.get(key) === placeholder) objects.delete(key);
        throw err;
      }
    },
    async get(key) {
      return bodyToStream(lookup("get", key).bytes.slice());
    },
    async head(key): Promise<ObjectStat> {
      const object = lookup("head", key);
      return { size: object.bytes.byteLength, lastModified: object.lastModified };
    },
    async *list(prefix): AsyncIterable<ObjectInfo> {
      assertValidPrefix(driver, prefix);
      for (const [key, object] of [...objects]) {
        if (key.startsWith(prefix)) yield { key, size: object.bytes.byteLength, lastModified: object.lastModified };
      }
    },
    async delete(key) {
      assertValidKey(driver, "delete", key);
      objects.delete(key);
    },
  };
}
