import { ResourceLimitError } from "../errors.js";
import { notFound, StorageError, type StorageErrorKind, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { isTransient } from "./retry.js";
import { sha256Hex } from "./streams.js";
import type { ObjectInfo, ObjectStat, Storage } from "./types.js";

/*
 * The slice of a Workers R2 binding this driver uses, declared here so lib/ does not
 * depend on @cloudflare/workers-types (it is also typechecked with Node's types). A real
 * `R2Bucket` is assignable to `R2BucketLike`; so is a test double.
 */
export interface R2ObjectLike {
  readonly key: string;
  readonly size: number;
  readonly uploaded: Date;
}

export interface R2ObjectBodyLike extends R2ObjectLike {
  readonly body: ReadableStream<Uint8Array>;
}

export interface R2ObjectsLike {
  objects: R2ObjectLike[];
  truncated: boolean;
  cursor?: string;
}

export interface R2BucketLike {
  head(key: string): Promise<R2ObjectLike | null>;
  get(key: string): Promise<R2ObjectBodyLike | null>;
  /**
   * Resolves null when an `onlyIf` precondition fails (nothing written). With `sha256`
   * (hex), R2 refuses a body whose digest differs (BadDigest) and stores nothing.
   */
  put(key: string, value: Uint8Array, options?: { onlyIf?: { etagDoesNotMatch?: string }; sha256?: string }): Promise<R2ObjectLike | null>;
  delete(key: string): Promise<void>;
  list(options: { prefix?: string; cursor?: string; limit?: number }): Promise<R2ObjectsLike>;
}

const LIST_LIMIT = 1000;

/*
 * R2 error codes the binding reports as `... (NNNNN)` at the end of its messages (and, in
 * some runtimes, as `code`): https://developers.cloudflare.com/r2/api/error-codes/
 */
const R2_STATUS: Record<number, number> = {
  10001: 500, // InternalError
  10007: 404, // NoSuchKey
  10020: 400, // InvalidObjectName
  10031: 412, // PreconditionFailed
  10043: 503, // ServiceUnavailable
  10058: 429, // TooManyRequests
};
const R2_TRANSIENT = new Set([10001, 10043, 10058]);

function r2Code(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "number") return code;
  const match = /\((\d{5,6})\)\s*$/.exec(String((err as { message?: unknown }).message ?? ""));
  return match ? Number(match[1]) : undefined;
}

/**
 * A Workers R2 binding as storage. Every body goes up in one put with its sha256, which R2
 * checks before it stores the object whole. `putIfAbsent` is R2's conditional put
 * (`etagDoesNotMatch: "*"`), atomic on the bucket.
 */
export function r2Storage(bucket: R2BucketLike): Storage {
  const driver = "r2";

  function toStorageError(operation: StorageOperation, key: string, err: unknown): StorageError | ResourceLimitError {
    if (err instanceof StorageError || err instanceof ResourceLimitError) return err;
    // Cloudflare's own subrequest limit: no fault of the store, and retrying cannot help.
    if (/too many subrequests/i.test(String((err as { message?: unknown } | null)?.message ?? ""))) {
      return new ResourceLimitError(
        `r2: ${operation} "${key}" failed: the Worker reached Cloudflare's subrequest limit per request. Back up fewer collections per request, raise limits.subrequests (and SUBREQUEST_LIMIT), or back up from Node`,
        { limit: "subrequests" },
        { cause: err },
      );
    }
    const code = r2Code(err);
    const retryable =
      (code !== undefined && R2_TRANSIENT.has(code)) ||
      (err as { retryable?: unknown } | null)?.retryable === true ||
      /network connection lost/i.test(String((err as { message?: unknown } | null)?.message ?? "")) ||
      isTransient(err);
    const kind: StorageErrorKind = code === 10020 ? "invalid_key" : retryable ? "unavailable" : "failed";
    const message = err instanceof Error ? err.message : String(err);
    return new StorageError(`r2: ${operation} "${key}" failed: ${message}`, {
      driver,
      operation,
      key,
      kind,
      status: code === undefined ? undefined : R2_STATUS[code],
      retryable,
      cause: err,
    });
  }

  /** One binding call, its failure typed and classified; retries are one layer above (retryingStorage). */
  async function call<T>(operation: StorageOperation, key: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toStorageError(operation, key, err);
    }
  }

  return {
    driver,
    capabilities: { atomicPutIfAbsent: true },

    async put(key, bytes) {
      assertValidKey(driver, "put", key);
      const sha256 = await sha256Hex(bytes);
      await call("put", key, () => bucket.put(key, bytes, { sha256 }));
    },

    async putIfAbsent(key, bytes) {
      assertValidKey(driver, "putIfAbsent", key);
      const sha256 = await sha256Hex(bytes);
      return call("putIfAbsent", key, async () => Boolean(await bucket.put(key, bytes, { onlyIf: { etagDoesNotMatch: "*" }, sha256 })));
    },

    async get(key) {
      assertValidKey(driver, "get", key);
      const object = await call("get", key, () => bucket.get(key));
      if (!object) throw notFound(driver, "get", key);
      return object.body;
    },

    async head(key): Promise<ObjectStat> {
      assertValidKey(driver, "head", key);
      const object = await call("head", key, () => bucket.head(key));
      if (!object) throw notFound(driver, "head", key);
      return { size: object.size, lastModified: object.uploaded };
    },

    async *list(prefix): AsyncIterable<ObjectInfo> {
      assertValidPrefix(driver, prefix);
      let cursor: string | undefined;
      do {
        const request = { limit: LIST_LIMIT, ...(prefix ? { prefix } : {}), ...(cursor ? { cursor } : {}) };
        const page = await call("list", prefix, () => bucket.list(request));
        for (const object of page.objects) yield { key: object.key, size: object.size, lastModified: object.uploaded };
        if (page.truncated && !page.cursor) {
          throw new StorageError(`r2: list "${prefix}" failed: a truncated page came without a cursor`, {
            driver,
            operation: "list",
            key: prefix,
          });
        }
        cursor = page.truncated ? page.cursor : undefined;
      } while (cursor);
    },

    async delete(key) {
      assertValidKey(driver, "delete", key);
      await call("delete", key, () => bucket.delete(key));
    },
  };
}
