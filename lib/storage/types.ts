/**
 * The one storage interface every driver implements (modelled on litestream's
 * ReplicaClient: each method states its contract, including what "not found" does).
 *
 * Keys are relative, `/`-separated paths (`chunks/ab/abcd…`). A driver never sees the
 * service's `STORAGE_PREFIX`: `withPrefix()` adds it in one place.
 */
export interface ObjectInfo {
  key: string;
  size?: number;
  lastModified?: Date;
}

export interface ObjectStat {
  size: number;
  lastModified?: Date;
}

export interface StorageCapabilities {
  /**
   * `putIfAbsent` is atomic on the backend (fs O_EXCL, R2 `onlyIf`, S3 `If-None-Match`,
   * GCS `ifGenerationMatch=0`): of N concurrent callers exactly one wins. When false,
   * `putIfAbsent` is a best-effort head-then-put and callers must confirm by reading back.
   */
  atomicPutIfAbsent: boolean;
}

export interface Storage {
  /** Driver name for logs and errors: `memory`, `fs`, `replit`, `s3`, `r2`. */
  readonly driver: string;
  readonly capabilities: StorageCapabilities;

  /**
   * Writes the object, replacing any existing one. The object becomes visible only when
   * complete: if the upload fails, nothing is left under `key` (a previous object, if
   * any, stays).
   */
  put(key: string, bytes: Uint8Array): Promise<void>;

  /**
   * Writes the object only if no object exists under `key`. Resolves `true` when this
   * call created it, `false` when the key already existed (nothing written).
   */
  putIfAbsent(key: string, bytes: Uint8Array): Promise<boolean>;

  /**
   * Opens the object for reading. A missing key rejects with a `StorageError` of kind
   * `not_found` (before any byte is streamed); never a generic error.
   */
  get(key: string): Promise<ReadableStream<Uint8Array>>;

  /** Size and last-modified time. A missing key rejects with kind `not_found`. */
  head(key: string): Promise<ObjectStat>;

  /**
   * Every object whose key starts with `prefix` (a plain string prefix, not a folder),
   * each exactly once, in no guaranteed order. Pagination happens inside the driver.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /** Removes the object. Deleting a missing key succeeds (idempotent). */
  delete(key: string): Promise<void>;
}
