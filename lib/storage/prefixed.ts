import type { Storage } from "./types.js";

/**
 * Puts every key under `prefix` (e.g. `chromadb/`), so one bucket can hold several
 * services' data; callers work with unprefixed keys. Errors keep the full key, which is
 * what an operator looks for in the bucket.
 */
export function withPrefix(storage: Storage, prefix: string): Storage {
  if (prefix === "") return storage;
  const p = prefix.endsWith("/") ? prefix : `${prefix}/`;
  return {
    driver: storage.driver,
    capabilities: storage.capabilities,
    put: (key, body) => storage.put(p + key, body),
    putIfAbsent: (key, body) => storage.putIfAbsent(p + key, body),
    get: (key) => storage.get(p + key),
    head: (key) => storage.head(p + key),
    async *list(prefixWithin) {
      for await (const info of storage.list(p + prefixWithin)) yield { ...info, key: info.key.slice(p.length) };
    },
    delete: (key) => storage.delete(p + key),
  };
}
