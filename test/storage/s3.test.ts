import { createHash, createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isNotFound, StorageError } from "../../lib/storage/errors.js";
import { s3Storage, type S3Options } from "../../lib/storage/s3.js";
import { retryingStorage } from "../../lib/storage/retry.js";
import { readAll } from "../../lib/storage/streams.js";
import { storageConformance } from "./conformance.js";
import { startS3rver, type TestS3rver } from "../fixtures/s3rver.js";

const CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
const text = (s: string) => new TextEncoder().encode(s);
const fastRetry = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

let server: TestS3rver;
let endpoint: string;

beforeAll(async () => {
  // "conformance" for the shared suite (which lists the whole bucket), "extras" for the rest.
  server = await startS3rver(["conformance", "extras"]);
  endpoint = server.endpoint;
});

afterAll(async () => {
  await server?.close();
});

function storage(options: Partial<S3Options> = {}) {
  return s3Storage({ endpoint, bucket: "extras", ...CREDENTIALS, ...options });
}

interface Sent {
  method: string;
  url: URL;
  headers: Headers;
  status: number;
}

/** A fetch that logs every request the driver sends, and its answer's status. */
function recordingFetch(log: Sent[], inner: (request: Request) => Promise<Response> = (r) => fetch(r)): typeof fetch {
  return (async (input: Request) => {
    const response = await inner(input);
    log.push({ method: input.method, url: new URL(input.url), headers: input.headers, status: response.status });
    return response;
  }) as typeof fetch;
}

const s3ErrorResponse = (status: number, code: string, message: string) =>
  new Response(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`, {
    status,
    headers: { "content-type": "application/xml" },
  });

const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");

/**
 * A transport that alters every request body over `limit` bytes: `short` delivers only its
 * first `limit` bytes as a complete, well-framed body (headers as signed); `cut` sends
 * `limit` bytes and then breaks the connection.
 */
function faultyBodyFetch(mode: "short" | "cut", limit: number): typeof fetch {
  return (async (request: Request) => {
    if (request.body === null) return fetch(request);
    const bytes = new Uint8Array(await request.arrayBuffer());
    if (bytes.byteLength <= limit) return fetch(new Request(request, { body: bytes }));
    const init = { method: request.method, headers: request.headers, redirect: "manual" as const };
    if (mode === "short") return fetch(new Request(request.url, { ...init, body: bytes.slice(0, limit) }));
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent) return controller.error(new Error("connection cut by the test"));
        sent = true;
        controller.enqueue(bytes.slice(0, limit));
      },
    });
    return fetch(new Request(request.url, { ...init, body, duplex: "half" } as RequestInit));
  }) as typeof fetch;
}

storageConformance({
  name: "s3 (s3rver)",
  create: async () => ({ storage: s3Storage({ endpoint, bucket: "conformance", ...CREDENTIALS }) }),
  faults: {
    shortWrite: async (limit) => ({ storage: s3Storage({ endpoint, bucket: "conformance", ...CREDENTIALS, fetch: faultyBodyFetch("short", limit) }) }),
    cutWrite: async (limit) => ({ storage: s3Storage({ endpoint, bucket: "conformance", ...CREDENTIALS, fetch: faultyBodyFetch("cut", limit) }) }),
  },
});

describe("s3 driver against s3rver", () => {
  it("pages through ListObjectsV2 with continuation tokens", async () => {
    const keys = Array.from({ length: 25 }, (_, i) => `paging/${String(i).padStart(2, "0")}`);
    await Promise.all(keys.map((key) => storage().put(key, text(key))));
    const log: Sent[] = [];
    const seen: string[] = [];
    for await (const info of storage({ listPageSize: 10, fetch: recordingFetch(log) }).list("paging/")) {
      seen.push(info.key);
      expect(info.size).toBe(info.key.length);
      expect(info.lastModified).toBeInstanceOf(Date);
    }
    expect(seen.sort()).toEqual(keys);
    expect(log.length).toBe(3);
    expect(log.map((s) => s.url.searchParams.get("max-keys"))).toEqual(["10", "10", "10"]);
    expect(log[0]!.url.searchParams.has("continuation-token")).toBe(false);
    expect(log.slice(1).every((s) => s.url.searchParams.get("continuation-token"))).toBe(true);

    // The default page is S3's maximum, 1000.
    const defaults: Sent[] = [];
    for await (const _ of storage({ fetch: recordingFetch(defaults) }).list("paging/")) void _;
    expect(defaults.map((s) => s.url.searchParams.get("max-keys"))).toEqual(["1000"]);
  });

  it("makes one attempt per call; the retry layer above retries a 503 SlowDown and then succeeds", async () => {
    let failuresLeft = 0;
    let calls = 0;
    const flaky = async (request: Request) => {
      calls++;
      if (failuresLeft > 0) {
        failuresLeft--;
        return s3ErrorResponse(503, "SlowDown", "Please reduce your request rate.");
      }
      return fetch(request);
    };
    const driver = storage({ fetch: flaky as typeof fetch });
    failuresLeft = 1;
    await expect(driver.put("retry/key", text("once"))).rejects.toMatchObject({ status: 503, retryable: true, kind: "unavailable" });
    expect(calls).toBe(1);

    const s3 = retryingStorage(driver, fastRetry);
    calls = 0;
    failuresLeft = 2;
    await s3.put("retry/key", text("survived"));
    expect(calls).toBe(3);
    calls = 0;
    failuresLeft = 3;
    expect(new TextDecoder().decode(await readAll(await s3.get("retry/key")))).toBe("survived");
    expect(calls).toBe(4);
  });

  it("under the retry layer, gives up after the configured tries with S3's code and message", async () => {
    let calls = 0;
    const down = (async () => {
      calls++;
      return s3ErrorResponse(503, "SlowDown", "Please reduce your request rate.");
    }) as unknown as typeof fetch;
    const err = await retryingStorage(storage({ fetch: down }), fastRetry)
      .head("retry/key")
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(calls).toBe(fastRetry.attempts);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ driver: "s3", operation: "head", key: "retry/key", status: 503, kind: "unavailable" });
    expect((err as Error).message).toMatch(/HTTP 503 SlowDown: Please reduce your request rate.*gave up after 4 tries/);
  });

  it("a 403 is not retried, and is reported as a failure with S3's code", async () => {
    let calls = 0;
    const denied = (async () => {
      calls++;
      return s3ErrorResponse(403, "AccessDenied", "Access Denied &amp; logged");
    }) as unknown as typeof fetch;
    const err = await retryingStorage(storage({ fetch: denied }), fastRetry)
      .put("denied/key", text("x"))
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(calls).toBe(1);
    expect(err).toMatchObject({ driver: "s3", operation: "put", status: 403, retryable: false, kind: "failed" });
    expect((err as Error).message).toMatch(/HTTP 403 AccessDenied: Access Denied & logged/);
  });

  it("a dropped connection is retryable, and retried by the layer above", async () => {
    let calls = 0;
    const dropping = (async (request: Request) => {
      if (++calls === 1) throw new TypeError("fetch failed", { cause: Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }) });
      return fetch(request);
    }) as typeof fetch;
    await retryingStorage(storage({ fetch: dropping }), fastRetry).put("retry/dropped", text("ok"));
    expect(calls).toBe(2);
  });

  it("a request that does not answer is aborted after timeoutMs: unavailable, retryable, saying how long it waited", async () => {
    let aborted = 0;
    const hanging = (async (request: Request) =>
      new Promise<Response>((_, reject) =>
        request.signal.addEventListener("abort", () => {
          aborted++;
          reject(request.signal.reason as Error);
        }),
      )) as typeof fetch;
    const err = await storage({ fetch: hanging, timeoutMs: 300 })
      .put("hang/key", text("x"))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ driver: "s3", operation: "put", key: "hang/key", kind: "unavailable", retryable: true });
    expect((err as Error).message).toBe("s3: put hang/key did not answer within 300ms");
    expect(aborted, "the hung request itself was aborted, not left open").toBe(1);

    // A download that stalls after its first bytes fails the stream the same way.
    const stalling = (async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(text("first bytes"));
          },
        }),
      )) as unknown as typeof fetch;
    const body = await storage({ fetch: stalling, timeoutMs: 300 }).get("hang/key");
    await expect(readAll(body)).rejects.toMatchObject({ kind: "unavailable", retryable: true, message: "s3: get hang/key did not answer within 300ms" });
  });

  it("putIfAbsent: 412 means taken; a lost answer is an error, never retried blindly", async () => {
    // s3rver ignores If-None-Match, so this fetch plays the server's conditional answers.
    let script: ("forward" | "lose-answer" | "precondition-failed")[] = [];
    let conditionalCalls = 0;
    const conditional = (async (request: Request) => {
      if (request.method === "PUT" && request.headers.get("if-none-match") === "*") {
        conditionalCalls++;
        const step = script.shift() ?? "forward";
        if (step === "precondition-failed") return s3ErrorResponse(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold");
        const response = await fetch(request);
        // The object was written, but the answer is lost on the way back.
        if (step === "lose-answer") return s3ErrorResponse(503, "ServiceUnavailable", "Please try again.");
        return response;
      }
      return fetch(request);
    }) as typeof fetch;
    const s3 = retryingStorage(storage({ fetch: conditional }), fastRetry);

    script = ["forward"];
    expect(await s3.putIfAbsent("pia/fresh", text("mine"))).toBe(true);
    script = ["precondition-failed"];
    expect(await s3.putIfAbsent("pia/fresh", text("again"))).toBe(false);

    // The write landed and its answer was lost: the caller gets the retryable error (the
    // lock then reads the key back), and nothing was sent twice.
    conditionalCalls = 0;
    script = ["lose-answer"];
    await expect(s3.putIfAbsent("pia/lost-answer", text("mine"))).rejects.toMatchObject({ retryable: true, status: 503 });
    expect(conditionalCalls).toBe(1);
    expect(new TextDecoder().decode(await readAll(await s3.get("pia/lost-answer")))).toBe("mine");
  });

  it("putIfAbsent: a 409 ConditionalRequestConflict is a loss, another 409 is an error", async () => {
    let answer = s3ErrorResponse(409, "ConditionalRequestConflict", "A conflicting conditional operation is in progress");
    const conflicted = (async () => answer.clone()) as unknown as typeof fetch;
    const s3 = storage({ fetch: conflicted });
    expect(await s3.putIfAbsent("pia/conflict", text("x"))).toBe(false);
    answer = s3ErrorResponse(409, "OperationAborted", "A conflicting conditional operation is currently in progress against this resource.");
    await expect(s3.putIfAbsent("pia/conflict", text("x"))).rejects.toThrow(/HTTP 409 OperationAborted/);
  });

  it("a 404 NoSuchBucket is a configuration error, never a missing key", async () => {
    const s3 = storage({ bucket: "no-such-bucket" });
    const err = await s3.get("any/key").then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect(isNotFound(err)).toBe(false);
    expect((err as Error).message).toMatch(/NoSuchBucket/);
    await expect(s3.delete("any/key")).rejects.toThrow(/NoSuchBucket/);
  });

  it("signs every request as SigV4 specifies, with the wire path already canonical (unicode, spaces, +, !*'()~)", async () => {
    const checked: string[] = [];
    const verifying = (async (request: Request) => {
      await verifySigV4(request, CREDENTIALS.secretAccessKey);
      checked.push(`${request.method} ${new URL(request.url).pathname}`);
      return fetch(request);
    }) as typeof fetch;
    const s3 = storage({ fetch: verifying, listPageSize: 1 });
    const key = "sig/ünï cödé 日本語/a+b (1)!*'~%20.bin";
    const other = "sig/ünï cödé 日本語/a+b (2).bin";
    await s3.put(key, text("signed"));
    await s3.put(other, text("signed"));
    expect(new TextDecoder().decode(await readAll(await s3.get(key)))).toBe("signed");
    expect((await s3.head(key)).size).toBe(6);
    const listed: string[] = [];
    for await (const info of s3.list("sig/ünï cödé 日本語/a+b (")) listed.push(info.key);
    expect(listed.sort()).toEqual([key, other]);
    await s3.delete(key);
    await expect(s3.head(key)).rejects.toSatisfy(isNotFound);
    expect(checked).toContain(`PUT /extras/sig/${awsEncode("ünï cödé 日本語")}/${awsEncode("a+b (1)!*'~%20.bin")}`);
    expect(checked.filter((c) => c.startsWith("GET /extras/")).length).toBeGreaterThanOrEqual(3); // get + 2 list pages
  });

  it("builds virtual-hosted URLs on AWS and path-style ones elsewhere or when forced", async () => {
    const urls: string[] = [];
    const capture = (async (request: Request) => {
      await verifySigV4(request, "secret");
      urls.push(request.url);
      return new Response(null, { status: 200, headers: { "content-length": "3" } });
    }) as typeof fetch;
    const base = { accessKeyId: "AKID", secretAccessKey: "secret", fetch: capture };
    await s3Storage({ ...base, endpoint: "https://s3.eu-west-1.amazonaws.com", bucket: "my-bucket", region: "eu-west-1" }).head("a/b c");
    await s3Storage({ ...base, endpoint: "https://s3.eu-west-1.amazonaws.com", bucket: "my-bucket", forcePathStyle: true }).head("a/b c");
    await s3Storage({ ...base, endpoint: "https://s3.amazonaws.com", bucket: "dotted.bucket.name" }).head("k");
    await s3Storage({ ...base, endpoint: "https://acct.r2.cloudflarestorage.com/", bucket: "backups", region: "auto" }).head("k");
    await s3Storage({ ...base, endpoint: "http://minio.local:9000/base/", bucket: "b", forcePathStyle: false }).head("k");
    expect(urls).toEqual([
      "https://my-bucket.s3.eu-west-1.amazonaws.com/a/b%20c",
      "https://s3.eu-west-1.amazonaws.com/my-bucket/a/b%20c",
      "https://s3.amazonaws.com/dotted.bucket.name/k",
      "https://acct.r2.cloudflarestorage.com/backups/k",
      "http://b.minio.local:9000/base/k",
    ]);
  });
});

/** SigV4's URI encoding, byte by byte, written independently of the driver and aws4fetch. */
function awsEncode(value: string): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const char = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * Recomputes the request's SigV4 signature from AWS's specification, as S3 does on receipt
 * (s3rver skips this check), and asserts that the path sent is already in canonical form.
 */
async function verifySigV4(request: Request, secretAccessKey: string): Promise<void> {
  const url = new URL(request.url);
  const auth = request.headers.get("authorization") ?? "";
  const match = /^AWS4-HMAC-SHA256 Credential=[^/]+\/(\d{8})\/([^/]+)\/s3\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(auth);
  expect(match, auth).not.toBeNull();
  const [, date, region, signedHeaders, signature] = match!;
  const amzDate = request.headers.get("x-amz-date") ?? "";
  expect(amzDate.slice(0, 8)).toBe(date);

  const canonicalUri = url.pathname
    .split("/")
    .map((segment) => awsEncode(decodeURIComponent(segment)))
    .join("/");
  expect(url.pathname, "the wire path is canonical").toBe(canonicalUri);
  const canonicalQuery = url.search
    .slice(1)
    .split("&")
    .filter(Boolean)
    .map((pair): [string, string] => {
      const eq = pair.indexOf("=");
      const [k, v] = eq < 0 ? [pair, ""] : [pair.slice(0, eq), pair.slice(eq + 1)];
      return [awsEncode(decodeURIComponent(k)), awsEncode(decodeURIComponent(v))];
    })
    .sort(([k1, v1], [k2, v2]) => (k1 < k2 ? -1 : k1 > k2 ? 1 : v1 < v2 ? -1 : v1 > v2 ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const names = signedHeaders!.split(";");
  for (const required of ["host", "x-amz-content-sha256", "x-amz-date"]) expect(names).toContain(required);
  const canonicalHeaders = names
    .map((name) => `${name}:${(name === "host" ? url.host : (request.headers.get(name) ?? "")).trim().replace(/\s+/g, " ")}\n`)
    .join("");
  const payloadHash = request.headers.get("x-amz-content-sha256") ?? "";
  // The payload is signed: its hash is the body's.
  const body = new Uint8Array(await request.clone().arrayBuffer());
  expect(payloadHash).toBe(sha256(body));

  const canonicalRequest = [request.method, canonicalUri, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].join("\n");
  const stringToSign = ["AWS4-HMAC-SHA256", amzDate, `${date}/${region}/s3/aws4_request`, sha256(canonicalRequest)].join("\n");
  const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date!), region!), "s3"), "aws4_request");
  expect(hmac(signingKey, stringToSign).toString("hex"), canonicalRequest).toBe(signature);
}
