export type StorageOperation = "put" | "putIfAbsent" | "get" | "head" | "list" | "delete";

/**
 * - `not_found`: the key does not exist (get/head only).
 * - `invalid_key`: the key breaks the key rules; a caller's mistake, not retryable.
 * - `unavailable`: the backend could not be reached or kept failing after retries.
 * - `failed`: the backend answered with a non-transient error.
 * - `full`: the backend has no room for the write (ENOSPC/EDQUOT, a quota, HTTP 507);
 *   not retryable: space has to be freed (prune) or added first. Nothing was left under the key.
 */
export type StorageErrorKind = "not_found" | "invalid_key" | "unavailable" | "failed" | "full";

export interface StorageErrorInit {
  driver: string;
  operation: StorageOperation;
  key?: string;
  kind?: StorageErrorKind;
  status?: number;
  retryable?: boolean;
  cause?: unknown;
}

/** The one error type every storage driver throws. */
export class StorageError extends Error {
  override readonly name = "StorageError";
  readonly driver: string;
  readonly operation: StorageOperation;
  readonly key: string | undefined;
  readonly kind: StorageErrorKind;
  readonly status: number | undefined;
  readonly retryable: boolean;

  constructor(message: string, init: StorageErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.driver = init.driver;
    this.operation = init.operation;
    this.key = init.key;
    this.kind = init.kind ?? "failed";
    this.status = init.status;
    this.retryable = init.retryable ?? false;
  }
}

export function isNotFound(err: unknown): err is StorageError {
  return err instanceof StorageError && err.kind === "not_found";
}

export function notFound(driver: string, operation: StorageOperation, key: string): StorageError {
  return new StorageError(`${driver}: no object at "${key}"`, {
    driver,
    operation,
    key,
    kind: "not_found",
    status: 404,
  });
}

/** HTTP statuses worth another try: throttling and server-side failures. */
export function isTransientStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}
