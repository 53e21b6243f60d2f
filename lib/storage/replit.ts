import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type { Bucket, File } from "@google-cloud/storage";
import { Client } from "@replit/object-storage";
import { isTransientStatus, notFound, StorageError, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { isTransient } from "./retry.js";
import type { ObjectInfo, ObjectStat, Storage } from "./types.js";

export interface ReplitStorageOptions {
  /** The bucket to use. Without it the client asks the Replit sidecar for the default one. */
  bucketId?: string;
}

/** GCS's own maximum page size for object listings. */
const PAGE_SIZE = 1000;

/** @replit/object-storage 1.0.0 keeps the @google-cloud/storage Bucket it wraps here. */
interface ClientInternals {
  getBucket(): Promise<Bucket>;
}

interface Connection {
  client: Client;
  bucket: Bucket;
}

const NETWORK_MESSAGE = /ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|EAI_AGAIN|socket hang up|network/i;
const md5Base64 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("base64");

/** The HTTP status behind any of the error shapes the two libraries produce. */
function statusOf(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown; status?: unknown; response?: { status?: unknown } };
  for (const value of [e.statusCode, e.code, e.status, e.response?.status]) {
    if (typeof value === "number" && value >= 100 && value < 600) return value;
  }
  return undefined;
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === "object" && err !== null && typeof (err as { message?: unknown }).message === "string") {
    return (err as { message: string }).message;
  }
  return String(err);
}


/**
 * Replit Object Storage through `@replit/object-storage`, which wraps a Google Cloud
 * Storage bucket. The client's results (`{ok:false}`) and errors become `StorageError`s.
 *
 * The client opens the bucket (bucket id or the sidecar's default, credentials) and
 * deletes. Where its API falls short this driver uses the `@google-cloud/storage` Bucket
 * it wraps: its `list()` returns names only and loads the whole listing in one go; it has
 * no metadata call and no preconditions; `uploadFromBytes` makes two requests (resumable)
 * and drops the HTTP status when the session request fails. The library's own retries are switched off, and this driver makes one
 * attempt per call: retries and timeouts are one layer above (retryingStorage).
 */
export function replitStorage(options: ReplitStorageOptions = {}): Storage {
  const driver = "replit";
  let connecting: Promise<Connection> | undefined;

  function toError(operation: StorageOperation, key: string, err: unknown): StorageError {
    if (err instanceof StorageError) return err;
    const status = statusOf(err);
    if (status === 404 && (operation === "get" || operation === "head")) return notFound(driver, operation, key);
    const retryable = status !== undefined ? isTransientStatus(status) : isTransient(err) || NETWORK_MESSAGE.test(messageOf(err));
    return new StorageError(`replit: ${operation} "${key}" failed${status ? ` (HTTP ${status})` : ""}: ${messageOf(err)}`, {
      driver,
      operation,
      key,
      kind: retryable ? "unavailable" : "failed",
      status,
      retryable,
      cause: err,
    });
  }

  /**
   * The client and its bucket, created on first use: after `STORAGE_EMULATOR_HOST` is set,
   * and with the client's init promise awaited at once (it rejects, off Replit and
   * without a bucket id, and would otherwise be an unhandled rejection).
   */
  async function connect(operation: StorageOperation, key: string): Promise<Connection> {
    connecting ??= (async () => {
      const client = new Client({ bucketId: options.bucketId });
      const bucket = await (client as unknown as ClientInternals).getBucket();
      // The library retries on its own (3 times, 1 s backoff and up); retryingStorage is the one layer.
      bucket.storage.retryOptions.maxRetries = 0;
      return { client, bucket };
    })();
    const attempt = connecting;
    try {
      return await attempt;
    } catch (err) {
      if (connecting === attempt) connecting = undefined; // a failed init is not cached
      throw new StorageError(`replit: cannot open the bucket: ${messageOf(err)}`, {
        driver,
        operation,
        key,
        kind: "unavailable",
        retryable: true,
        cause: err,
      });
    }
  }

  /** Runs one call, mapping every failure to a StorageError. */
  async function oneCall<T>(operation: StorageOperation, key: string, fn: (c: Connection) => Promise<T>): Promise<T> {
    const connection = await connect(operation, key);
    try {
      return await fn(connection);
    } catch (err) {
      throw toError(operation, key, err);
    }
  }

  /**
   * One multipart request; with `ifAbsent`, GCS creates the object only if there is none.
   * The body's MD5 goes in the metadata, so GCS refuses a body damaged on the way (the
   * library's own check comes after the object replaced the old one, and deletes both).
   */
  async function saveBytes(file: File, bytes: Uint8Array, ifAbsent: boolean): Promise<void> {
    await file.save(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      resumable: false,
      metadata: { md5Hash: md5Base64(bytes) },
      ...(ifAbsent ? { preconditionOpts: { ifGenerationMatch: 0 } } : {}),
    });
  }

  return {
    driver,
    // GCS checks ifGenerationMatch=0 when it creates the object (the multipart request):
    // of concurrent creators exactly one gets 200.
    capabilities: { atomicPutIfAbsent: true },

    /** One multipart request. */
    async put(key, bytes) {
      assertValidKey(driver, "put", key);
      await oneCall("put", key, ({ bucket }) => saveBytes(bucket.file(key), bytes, false));
    },

    /** One conditional request (`ifGenerationMatch=0`); 412: the key was taken. */
    async putIfAbsent(key, bytes) {
      assertValidKey(driver, "putIfAbsent", key);
      return oneCall("putIfAbsent", key, async ({ bucket }) => {
        try {
          await saveBytes(bucket.file(key), bytes, true);
          return true;
        } catch (err) {
          if (statusOf(err) !== 412) throw err;
          return false;
        }
      });
    },

    /**
     * Waits for the first chunk (or the end), so a missing key, like any failure to open,
     * rejects before anything is streamed, and is retried when transient. A failure later
     * on errors the stream with a StorageError and is not retried. Cancelling the stream
     * closes the download (the client's `downloadAsStream` pipes into a PassThrough, and
     * cancelling that leaves the response open and paused, holding its socket).
     */
    async get(key) {
      assertValidKey(driver, "get", key);
      return oneCall("get", key, async ({ bucket }) => {
        const nodeStream = bucket.file(key).createReadStream();
        const reader = (Readable.toWeb(nodeStream) as unknown as ReadableStream<Uint8Array>).getReader();
        let first: ReadableStreamReadResult<Uint8Array>;
        try {
          first = await reader.read();
        } catch (err) {
          nodeStream.destroy();
          throw err;
        }
        return new ReadableStream<Uint8Array>({
          start(controller) {
            if (first.done) controller.close();
            else controller.enqueue(first.value);
          },
          async pull(controller) {
            try {
              const { done, value } = await reader.read();
              if (done) controller.close();
              else controller.enqueue(value);
            } catch (err) {
              controller.error(toError("get", key, err));
            }
          },
          cancel: (reason) => reader.cancel(reason),
        });
      });
    },

    async head(key): Promise<ObjectStat> {
      assertValidKey(driver, "head", key);
      return oneCall("head", key, async ({ bucket }) => {
        const [metadata] = await bucket.file(key).getMetadata();
        return { size: Number(metadata.size), lastModified: metadata.updated ? new Date(metadata.updated) : undefined };
      });
    },

    /** One page (up to 1,000 objects) per request, each page retried on its own. */
    async *list(prefix): AsyncIterable<ObjectInfo> {
      assertValidPrefix(driver, prefix);
      let pageToken: string | undefined;
      do {
        const [files, next] = await oneCall("list", prefix, ({ bucket }) =>
          bucket.getFiles({ prefix, maxResults: PAGE_SIZE, pageToken, autoPaginate: false, versions: false }),
        );
        for (const file of files) {
          const { size, updated } = file.metadata;
          yield {
            key: file.name,
            size: size === undefined ? undefined : Number(size),
            lastModified: updated ? new Date(updated) : undefined,
          };
        }
        pageToken = (next as { pageToken?: string } | null)?.pageToken;
      } while (pageToken);
    },

    async delete(key) {
      assertValidKey(driver, "delete", key);
      await oneCall("delete", key, async ({ client }) => {
        const result = await client.delete(key);
        if (!result.ok && result.error.statusCode !== 404) throw result.error;
      });
    },
  };
}
