import { AwsClient } from "aws4fetch";
import { isTransientStatus, notFound, StorageError, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { timeoutError } from "./retry.js";
import { sha256Hex } from "./streams.js";
import type { ObjectInfo, ObjectStat, Storage } from "./types.js";

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export interface S3Options {
  /** `https://s3.eu-west-1.amazonaws.com`, `https://<account>.r2.cloudflarestorage.com`, `http://127.0.0.1:9000`. */
  endpoint: string;
  bucket: string;
  /** Signing region; default `us-east-1` (R2 treats it as `auto`, MinIO's default). */
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** For temporary credentials (STS). */
  sessionToken?: string;
  /**
   * Path-style URLs (`endpoint/bucket/key`) instead of virtual-hosted ones
   * (`bucket.endpoint/key`). Default: virtual-hosted on `*.amazonaws.com` (unless the bucket
   * name is not a plain DNS label), path-style everywhere else (MinIO, R2, GCS, a local
   * server), which all serve path-style while virtual hosts need DNS set up.
   */
  forcePathStyle?: boolean;
  /** Keys per ListObjectsV2 page (`max-keys`), 1 to 1000; default 1000. */
  listPageSize?: number;
  /**
   * STORAGE_TIMEOUT: a request without progress for this long is aborted and fails as a
   * retryable `unavailable` StorageError; an upload gets more time for its bytes (at
   * 256 KiB/s). Default 60 s. Retries are not the driver's: see retryingStorage.
   */
  timeoutMs?: number;
  /** The fetch to send requests with (tests wrap it); default the global fetch. */
  fetch?: typeof fetch;
}

interface Call {
  operation: StorageOperation;
  /** The storage key (or list prefix) the call is about, for errors. */
  key: string;
  method: "GET" | "HEAD" | "PUT" | "DELETE";
  /** The object the URL names; the bucket itself when absent. */
  objectKey?: string;
  query?: [string, string][];
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** Non-2xx statuses that are answers rather than failures (412 for a conditional put). */
  accept?: number[];
}

/**
 * An S3-compatible store (AWS S3, R2's S3 API, MinIO, GCS interoperability), speaking plain
 * HTTP through aws4fetch: only fetch, WebCrypto and Web streams, so it runs in Workers too.
 *
 * - put: the bytes go up in one PUT (S3 stores an object whole or not at all).
 * - putIfAbsent: `If-None-Match: *`, which S3 (since 2024), R2 and MinIO honour atomically.
 * - Every body goes with its sha256 in the signed `x-amz-content-sha256`: S3 refuses a body
 *   damaged or cut short on the way (XAmzContentSHA256Mismatch) instead of storing it.
 * - Each request is made once, with a timeout, and its failure classified (`retryable` on
 *   408/429/5xx, network errors and timeouts): retries are one layer above (retryingStorage).
 */
export function s3Storage(options: S3Options): Storage {
  const driver = "s3";
  const listPageSize = options.listPageSize ?? 1000;
  if (!Number.isInteger(listPageSize) || listPageSize < 1 || listPageSize > 1000) {
    throw new RangeError(`s3: listPageSize must be an integer from 1 to 1000, got ${listPageSize}`);
  }
  const endpoint = new URL(options.endpoint);
  if (endpoint.protocol !== "https:" && endpoint.protocol !== "http:") {
    throw new TypeError(`s3: endpoint must be an http(s) URL, got ${JSON.stringify(options.endpoint)}`);
  }
  const bucket = options.bucket;
  if (!bucket || bucket.includes("/")) throw new TypeError(`s3: invalid bucket name ${JSON.stringify(bucket)}`);
  const pathStyle =
    options.forcePathStyle ?? !(/(^|\.)amazonaws\.com(\.cn)?$/.test(endpoint.hostname) && /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(bucket));
  const basePath = endpoint.pathname.replace(/\/+$/, "");
  const origin = pathStyle ? endpoint.origin : `${endpoint.protocol}//${bucket}.${endpoint.host}`;
  const bucketPath = pathStyle ? `${basePath}/${encodeSegment(bucket)}` : basePath;

  const client = new AwsClient({
    accessKeyId: options.accessKeyId,
    secretAccessKey: options.secretAccessKey,
    sessionToken: options.sessionToken,
    service: "s3",
    region: options.region ?? "us-east-1",
    retries: 0, // retries are one layer above (retryingStorage), with a StorageError per failure
  });
  const timeoutMs = options.timeoutMs ?? 60_000;
  // Never call a detached global fetch: Workers throw "Illegal invocation".
  const doFetch: (request: Request) => Promise<Response> = options.fetch ?? ((request) => fetch(request));

  function urlOf(objectKey: string | undefined, query: [string, string][] = []): string {
    // Each key segment is encoded exactly as SigV4 canonicalizes it (RFC 3986, every byte but
    // A-Z a-z 0-9 - . _ ~), so the path on the wire is already canonical: aws4fetch decodes
    // the path once and re-encodes it the same way, and the server does too. `+` must go as
    // %2B: aws4fetch (and S3, for legacy reasons) read a literal `+` in a path as a space.
    const path = objectKey === undefined ? `${bucketPath}/` : `${bucketPath}/${objectKey.split("/").map(encodeSegment).join("/")}`;
    const search = query.map(([k, v]) => `${encodeSegment(k)}=${encodeSegment(v)}`).join("&");
    return `${origin}${path}${search ? `?${search}` : ""}`;
  }

  function describe(call: Call): string {
    return `s3: ${call.operation} ${JSON.stringify(call.key)}`;
  }

  /** One signed request. A status that is neither 2xx nor accepted throws a StorageError. */
  async function send(call: Call, payloadHash: string, signal: AbortSignal): Promise<Response> {
    const request = await client.sign(urlOf(call.objectKey, call.query), {
      method: call.method,
      headers: { ...call.headers, "x-amz-content-sha256": payloadHash },
      body: call.body as Uint8Array<ArrayBuffer> | undefined,
      signal,
    });
    let response: Response;
    try {
      response = await doFetch(request);
    } catch (err) {
      if (signal.reason instanceof StorageError) throw signal.reason; // our timeout
      const aborted = (err as Error | undefined)?.name === "AbortError";
      throw new StorageError(`${describe(call)} failed: ${(err as Error | undefined)?.message ?? String(err)}`, {
        driver,
        operation: call.operation,
        key: call.key,
        kind: aborted ? "failed" : "unavailable",
        retryable: !aborted,
        cause: err,
      });
    }
    if (response.ok || call.accept?.includes(response.status)) return response;
    throw await failure(call, response);
  }

  /** The StorageError for an error response, with S3's `<Code>` and `<Message>`. */
  async function failure(call: Call, response: Response, bodyText?: string): Promise<StorageError> {
    const text = bodyText ?? (await response.text().catch(() => ""));
    const code = xmlText(text, "Code") ?? response.headers.get("x-amz-error-code") ?? undefined;
    const message = xmlText(text, "Message");
    const { status } = response;
    if (status === 404 && (call.operation === "get" || call.operation === "head") && code !== "NoSuchBucket") {
      return notFound(driver, call.operation, call.key);
    }
    const requestId = response.headers.get("x-amz-request-id");
    // 507 Insufficient Storage: a server (MinIO, a gateway) out of space. Not retryable.
    const full = status === 507;
    // A body that did not match its signed sha256 or Content-Length was damaged on the way:
    // the server stored nothing, and the bytes are ours to send again.
    const retryable =
      !full && (isTransientStatus(status) || code === "InternalError" || code === "SlowDown" || code === "XAmzContentSHA256Mismatch" || code === "BadDigest" || code === "IncompleteBody");
    const detail = [code, message].filter(Boolean).join(": ");
    return new StorageError(
      `${describe(call)} failed: HTTP ${status}${detail ? ` ${detail}` : ""}${requestId ? ` (request id ${requestId})` : ""}`,
      { driver, operation: call.operation, key: call.key, status, retryable, kind: full ? "full" : retryable ? "unavailable" : "failed" },
    );
  }

  /**
   * Sends `call` once and hands the response to `handle`, under a timeout: `timeoutMs`
   * (plus time for the bytes of an upload) until `handle` is done, or with `streamed`,
   * until the response body (which `handle` returns) goes that long without a byte.
   * The retry layer times the same call with the same budget, but it can only stop
   * waiting: this timer is what aborts the request itself. Without it, a hung attempt
   * holds its socket (undici: up to 300 s) and its write can still land after the caller
   * gave up (without it, test/reliability/hung-store.test.ts fails: after the thaw the
   * next backup finds the lock still held).
   */
  async function request<T>(call: Call, handle: (response: Response) => Promise<T>): Promise<T>;
  async function request(call: Call, handle: (response: Response) => Promise<ReadableStream<Uint8Array>>, streamed: true): Promise<ReadableStream<Uint8Array>>;
  async function request<T>(call: Call, handle: (response: Response) => Promise<T>, streamed = false): Promise<T> {
    const payloadHash = call.body ? await sha256Hex(call.body) : EMPTY_SHA256;
    const controller = new AbortController();
    const allowedMs = timeoutMs + ((call.body?.byteLength ?? 0) / (256 * 1024)) * 1000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(timeoutError(driver, call.operation, call.key, ms)), ms);
    };
    arm(allowedMs);
    try {
      const response = await send(call, payloadHash, controller.signal);
      const result = await handle(response);
      if (streamed) return idleWatched(result as ReadableStream<Uint8Array>, controller.signal, () => arm(timeoutMs), () => clearTimeout(timer)) as T;
      clearTimeout(timer);
      return result;
    } catch (err) {
      clearTimeout(timer);
      if (controller.signal.reason instanceof StorageError) throw controller.signal.reason;
      if (err instanceof StorageError) throw err;
      throw new StorageError(`${describe(call)} failed reading the response: ${(err as Error).message}`, {
        driver,
        operation: call.operation,
        key: call.key,
        kind: "unavailable",
        retryable: true,
        cause: err,
      });
    }
  }

  /** `body`, calling `progress` on each piece and `done` at its end; once `signal` aborts (our timeout), reads fail with its reason. */
  function idleWatched(body: ReadableStream<Uint8Array>, signal: AbortSignal, progress: () => void, done: () => void): ReadableStream<Uint8Array> {
    const reader = body.getReader();
    const aborted = new Promise<never>((_, reject) => {
      const stop = () => {
        reject(signal.reason as Error);
        void reader.cancel(signal.reason).catch(() => {});
      };
      if (signal.aborted) stop();
      else signal.addEventListener("abort", stop, { once: true });
    });
    aborted.catch(() => {});
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done: ended, value } = await Promise.race([reader.read(), aborted]);
          if (ended) {
            done();
            controller.close();
            return;
          }
          progress();
          controller.enqueue(value);
        } catch (err) {
          done();
          throw err instanceof StorageError ? err : new StorageError(`s3: get failed reading the body: ${(err as Error).message}`, { driver, operation: "get", kind: "unavailable", retryable: true, cause: err });
        }
      },
      cancel(reason) {
        done();
        return reader.cancel(reason);
      },
    });
  }

  /** Reads (and so releases) a small response body. */
  const drain = async (response: Response) => {
    await response.arrayBuffer();
  };

  /** PUT of buffered bytes; with `ifAbsent`, resolves false when the key was taken. */
  async function putObject(operation: StorageOperation, key: string, bytes: Uint8Array, ifAbsent: boolean): Promise<boolean> {
    const call: Call = {
      operation,
      key,
      method: "PUT",
      objectKey: key,
      body: bytes,
      headers: {
        "content-type": "application/octet-stream",
        ...(ifAbsent ? { "if-none-match": "*" } : {}),
      },
      accept: ifAbsent ? [409, 412] : [],
    };
    return request(call, async (response) => {
      const text = await response.text();
      if (response.ok) return true;
      // 409 ConditionalRequestConflict: a rival conditional write to the key is in flight
      // (S3); treat the key as taken, as for 412. Any other 409 is a real failure.
      if (response.status === 409 && xmlText(text, "Code") !== "ConditionalRequestConflict") throw await failure(call, response, text);
      return false;
    });
  }

  return {
    driver,
    capabilities: { atomicPutIfAbsent: true },

    async put(key, bytes) {
      assertValidKey(driver, "put", key);
      await putObject("put", key, bytes, false);
    },

    async putIfAbsent(key, bytes) {
      assertValidKey(driver, "putIfAbsent", key);
      return putObject("putIfAbsent", key, bytes, true);
    },

    async get(key) {
      assertValidKey(driver, "get", key);
      // The body is timed out when it stalls, not by its total time.
      return request({ operation: "get", key, method: "GET", objectKey: key }, async (response) => response.body ?? new Blob([]).stream(), true);
    },

    async head(key): Promise<ObjectStat> {
      assertValidKey(driver, "head", key);
      const call: Call = { operation: "head", key, method: "HEAD", objectKey: key };
      return request(call, async (response) => {
        await drain(response);
        const size = Number(response.headers.get("content-length") ?? NaN);
        if (!Number.isSafeInteger(size) || size < 0) {
          throw new StorageError(`${describe(call)} failed: the response has no Content-Length`, { driver, operation: "head", key });
        }
        const modified = response.headers.get("last-modified");
        const lastModified = modified ? new Date(modified) : undefined;
        return lastModified && !Number.isNaN(lastModified.getTime()) ? { size, lastModified } : { size };
      });
    },

    async *list(prefix): AsyncIterable<ObjectInfo> {
      assertValidPrefix(driver, prefix);
      let token: string | undefined;
      while (true) {
        const query: [string, string][] = [
          ["list-type", "2"],
          ["max-keys", String(listPageSize)],
        ];
        if (prefix) query.push(["prefix", prefix]);
        if (token !== undefined) query.push(["continuation-token", token]);
        const call: Call = { operation: "list", key: prefix, method: "GET", query };
        const page = await request(call, async (response) => {
          const text = await response.text();
          try {
            return parseListPage(text);
          } catch (err) {
            throw new StorageError(`${describe(call)} failed: unreadable ListObjectsV2 answer: ${(err as Error).message}`, {
              driver,
              operation: "list",
              key: prefix,
              cause: err,
            });
          }
        });
        yield* page.objects;
        if (!page.truncated) return;
        if (!page.nextToken || page.nextToken === token) {
          throw new StorageError(`${describe(call)} failed: a truncated listing page came without a new NextContinuationToken`, {
            driver,
            operation: "list",
            key: prefix,
          });
        }
        token = page.nextToken;
      }
    },

    async delete(key) {
      assertValidKey(driver, "delete", key);
      const call: Call = { operation: "delete", key, method: "DELETE", objectKey: key, accept: [404] };
      await request(call, async (response) => {
        const text = await response.text();
        // S3 answers 204 for a missing key; some compatibles answer 404 NoSuchKey: both are
        // success. A missing bucket is a configuration error, never "already deleted".
        if (response.status === 404 && xmlText(text, "Code") === "NoSuchBucket") throw await failure(call, response, text);
      });
    },
  };
}

/** RFC 3986 percent-encoding, as SigV4 wants it: every byte except A-Z a-z 0-9 - . _ ~. */
function encodeSegment(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}


// A minimal XML reader for the few S3 responses we parse (ListObjectsV2, <Error>). No XML library: this must run in Workers (no node: modules, small bundle),
// and these documents are flat, machine-written and entity-escaped, so a tag can be found
// with a regular expression: a `<` inside text is always escaped as `&lt;`, so key text
// can never be mistaken for markup.

/** The raw inner text of each `<tag>…</tag>` (or `<tag/>`), in document order. */
function xmlElements(xml: string, tag: string): string[] {
  const pattern = new RegExp(`<${tag}(?:\\s[^>]*)?(?:/>|>([\\s\\S]*?)</${tag}\\s*>)`, "g");
  return Array.from(xml.matchAll(pattern), (match) => match[1] ?? "");
}

/** The decoded text of the first `<tag>`, or undefined when there is none. */
function xmlText(xml: string, tag: string): string | undefined {
  const [first] = xmlElements(xml, tag);
  return first === undefined ? undefined : decodeXml(first);
}

const NAMED_ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** Resolves the predefined and numeric entities, and CDATA sections. */
function decodeXml(text: string): string {
  return text.replace(/<!\[CDATA\[([\s\S]*?)\]\]>|&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (whole, cdata: string | undefined, entity: string | undefined) => {
    if (cdata !== undefined) return cdata;
    if (entity === undefined) return whole;
    if (entity.startsWith("#")) {
      const code = entity[1] === "x" ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10);
      return code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[entity] ?? whole;
  });
}

interface ListPage {
  objects: ObjectInfo[];
  truncated: boolean;
  nextToken: string | undefined;
}

function parseListPage(xml: string): ListPage {
  if (!/<ListBucketResult[\s>]/.test(xml)) throw new Error(`not a ListBucketResult: ${xml.slice(0, 200)}`);
  const objects = xmlElements(xml, "Contents").map((contents): ObjectInfo => {
    const key = xmlText(contents, "Key");
    if (key === undefined) throw new Error("a <Contents> entry has no <Key>");
    const info: ObjectInfo = { key };
    const size = xmlText(contents, "Size");
    if (size !== undefined && size.trim() !== "") info.size = Number(size);
    const modified = xmlText(contents, "LastModified");
    const date = modified ? new Date(modified) : undefined;
    if (date && !Number.isNaN(date.getTime())) info.lastModified = date;
    return info;
  });
  // <Contents> entries hold only <Key>, <Size>, …, so these top-level tags are unambiguous.
  return {
    objects,
    truncated: xmlText(xml, "IsTruncated")?.trim() === "true",
    nextToken: xmlText(xml, "NextContinuationToken"),
  };
}
