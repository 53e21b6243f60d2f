import { notFound, StorageError, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { bytesToStream } from "./streams.js";
import type { ObjectInfo, ObjectStat, Storage } from "./types.js";

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

  /** A copy of `bytes`, if they fit in the quota beside everything but `key`'s current object. */
  function accept(operation: StorageOperation, key: string, bytes: Uint8Array): Uint8Array {
    let held = 0;
    for (const [k, object] of objects) if (k !== key) held += object.bytes.byteLength;
    if (bytes.byteLength > maxBytes - held) {
      throw new StorageError(`memory: ${operation} "${key}" failed: the quota of ${maxBytes} bytes is full: ${held} bytes held, ${bytes.byteLength} needed`, { driver, operation, key, kind: "full" });
    }
    return bytes.slice();
  }

  async function put(key: string, bytes: Uint8Array): Promise<void> {
    assertValidKey(driver, "put", key);
    objects.set(key, { bytes: accept("put", key, bytes), lastModified: new Date() });
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
    async putIfAbsent(key, bytes) {
      assertValidKey(driver, "putIfAbsent", key);
      // Checked and set with no await between: concurrent callers have exactly one winner.
      if (objects.has(key)) return false;
      objects.set(key, { bytes: accept("putIfAbsent", key, bytes), lastModified: new Date() });
      return true;
    },
    async get(key) {
      return bytesToStream(lookup("get", key).bytes.slice());
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
