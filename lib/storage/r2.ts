import { notFound, StorageError, type StorageErrorKind, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { isTransient } from "./retry.js";
import { fixedSizePieces, readAll, sha256Hex, TooLargeError } from "./streams.js";
import type { Body, ObjectInfo, ObjectStat, Storage } from "./types.js";

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

export interface R2UploadedPartLike {
  partNumber: number;
  etag: string;
}

export interface R2MultipartUploadLike {
  uploadPart(partNumber: number, value: Uint8Array): Promise<R2UploadedPartLike>;
  abort(): Promise<void>;
  complete(uploadedParts: R2UploadedPartLike[]): Promise<R2ObjectLike>;
}

export interface R2ObjectsLike {
  objects: R2ObjectLike[];
  truncated: boolean;
  cursor?: string;
}

export interface R2BucketLike {
  head(key: string): Promise<R2ObjectLike | null>;
  get(key: string): Promise<R2ObjectBodyLike | null>;
  /** Resolves null when an `onlyIf` precondition fails (nothing written). */
  /** With `sha256` (hex), R2 refuses a body whose digest differs (BadDigest) and stores nothing. */
  put(key: string, value: Uint8Array, options?: { onlyIf?: { etagDoesNotMatch?: string }; sha256?: string }): Promise<R2ObjectLike | null>;
  createMultipartUpload(key: string): Promise<R2MultipartUploadLike>;
  delete(key: string): Promise<void>;
  list(options: { prefix?: string; cursor?: string; limit?: number }): Promise<R2ObjectsLike>;
}

export interface R2StorageOptions {
  /**
   * Part size for streams of unknown length, 8 MiB unless set. R2 wants every part but
   * the last at least 5 MiB and all of one size; a stream that fits in one part is sent
   * with a single put.
   */
  partSize?: number;
  /**
   * The largest stream body `putIfAbsent` buffers (32 MiB unless set). R2's conditional
   * write exists only for single puts, which need a known length; byte bodies have no limit.
   */
  putIfAbsentMaxBytes?: number;
}

const MiB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MiB;
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
 * A Workers R2 binding as storage. Byte bodies go up in one put; streams of unknown
 * length (which the binding refuses) are cut into fixed-size parts: one part is one put,
 * more become a multipart upload that is aborted on any failure, so an object appears
 * only when complete. `putIfAbsent` is R2's conditional put (`etagDoesNotMatch: "*"`),
 * atomic on the bucket.
 */
export function r2Storage(bucket: R2BucketLike, options: R2StorageOptions = {}): Storage {
  const driver = "r2";
  const partSize = options.partSize ?? 8 * MiB;
  const putIfAbsentMaxBytes = options.putIfAbsentMaxBytes ?? 32 * MiB;
  if (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE) {
    throw new RangeError(`r2: partSize must be an integer of at least ${MIN_PART_SIZE} bytes (R2's minimum part size), got ${partSize}`);
  }

  function toStorageError(operation: StorageOperation, key: string, err: unknown): StorageError {
    if (err instanceof StorageError) return err;
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

  async function putStream(key: string, stream: ReadableStream<Uint8Array>): Promise<void> {
    const pieces = fixedSizePieces(stream, partSize);
    try {
      // Up to two parts decide between one put and a multipart upload; each part is
      // released once sent, so memory holds about two parts, never the object.
      const head: Uint8Array[] = [];
      for (let i = 0; i < 2; i++) {
        const piece = await pieces.next();
        if (piece.done) break;
        head.push(piece.value);
      }
      if (head.length < 2) {
        const only = head[0] ?? new Uint8Array(0);
        const sha256 = await sha256Hex(only);
        await call("put", key, () => bucket.put(key, only, { sha256 }));
        return;
      }
      const upload = await call("put", key, () => bucket.createMultipartUpload(key));
      try {
        const parts: R2UploadedPartLike[] = [];
        let sent = 0;
        const send = async (bytes: Uint8Array) => {
          const partNumber = parts.length + 1;
          sent += bytes.byteLength;
          parts.push(await call("put", key, () => upload.uploadPart(partNumber, bytes)));
        };
        while (head.length > 0) await send(head.shift()!);
        while (true) {
          const piece = await pieces.next();
          if (piece.done) break;
          await send(piece.value);
        }
        const object = await call("put", key, () => upload.complete(parts));
        // Parts carry no checksum through the binding: check the whole at least by its size.
        if (object.size !== sent) {
          await bucket.delete(key).catch(() => {});
          throw new StorageError(`r2: put "${key}" failed: the completed object holds ${object.size} bytes, ${sent} were sent`, { driver, operation: "put", key, retryable: true, kind: "unavailable" });
        }
      } catch (err) {
        // Drop the uploaded parts: an uncompleted upload never shows under the key.
        await upload.abort().catch(() => {});
        throw err;
      }
    } finally {
      // Stops and cancels the source if the upload ended early.
      await pieces.return(undefined);
    }
  }

  return {
    driver,
    capabilities: { atomicPutIfAbsent: true },

    async put(key, body: Body) {
      assertValidKey(driver, "put", key);
      try {
        if (body instanceof Uint8Array) {
          const sha256 = await sha256Hex(body);
          await call("put", key, () => bucket.put(key, body, { sha256 }));
        }
        else await putStream(key, body);
      } catch (err) {
        throw toStorageError("put", key, err);
      }
    },

    async putIfAbsent(key, body) {
      assertValidKey(driver, "putIfAbsent", key);
      let bytes: Uint8Array;
      try {
        bytes = body instanceof Uint8Array ? body : await readAll(body, putIfAbsentMaxBytes);
      } catch (err) {
        if (err instanceof TooLargeError && !(body instanceof Uint8Array)) {
          await body.cancel().catch(() => {}); // readAll stopped reading: stop the source too
          throw new StorageError(
            `r2: putIfAbsent "${key}": a stream body over ${putIfAbsentMaxBytes} bytes cannot be written conditionally (R2 allows it only for single puts); pass bytes or raise putIfAbsentMaxBytes`,
            { driver, operation: "putIfAbsent", key, cause: err },
          );
        }
        throw toStorageError("putIfAbsent", key, err);
      }
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

/** Hex sha256 (WebCrypto: Workers and Node). */
