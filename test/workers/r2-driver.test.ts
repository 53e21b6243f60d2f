import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { StorageError } from "../../lib/storage/errors.js";
import { r2Storage, type R2BucketLike, type R2MultipartUploadLike } from "../../lib/storage/r2.js";
import { retryingStorage } from "../../lib/storage/retry.js";
import { readAll } from "../../lib/storage/streams.js";
import { failingStream, storageFaultConformance } from "../storage/conformance.js";

// R2-specific behaviour, beside the shared conformance suite (r2.test.ts). Both files use
// the one emulated bucket, so every key here lives under "r2x/", which the suite never uses.

const MiB = 1024 * 1024;
const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Forwards to the real binding and records the multipart calls. */
function recording(bucket: R2BucketLike): { bucket: R2BucketLike; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    bucket: {
      head: (key) => bucket.head(key),
      get: (key) => bucket.get(key),
      put: (key, value, options) => {
        calls.push(`put ${value.byteLength}`);
        return bucket.put(key, value, options);
      },
      delete: (key) => bucket.delete(key),
      list: (options) => bucket.list(options),
      async createMultipartUpload(key): Promise<R2MultipartUploadLike> {
        calls.push("create");
        const upload = await bucket.createMultipartUpload(key);
        return {
          uploadPart: (n, value) => {
            calls.push(`part ${n} ${value.byteLength}`);
            return upload.uploadPart(n, value);
          },
          abort: () => {
            calls.push("abort");
            return upload.abort();
          },
          complete: (parts) => {
            calls.push(`complete ${parts.length}`);
            return upload.complete(parts);
          },
        };
      },
    },
  };
}

/** `length` bytes in uneven chunks; byte i is i mod 251. */
function patternStream(length: number): { stream: ReadableStream<Uint8Array>; bytes: Uint8Array } {
  const bytes = Uint8Array.from({ length }, (_, i) => i % 251);
  let offset = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= length) return controller.close();
      const n = Math.min(777_777, length - offset);
      controller.enqueue(bytes.slice(offset, offset + n));
      offset += n;
    },
  });
  return { stream, bytes };
}

/** "same" or where two byte arrays first differ (toEqual's diff of MiBs would exhaust the heap). */
function compareBytes(actual: Uint8Array, expected: Uint8Array): string {
  if (actual.byteLength !== expected.byteLength) return `length ${actual.byteLength}, expected ${expected.byteLength}`;
  for (let i = 0; i < actual.byteLength; i++) {
    if (actual[i] !== expected[i]) return `byte ${i} is ${actual[i]}, expected ${expected[i]}`;
  }
  return "same";
}

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of r2Storage(env.BACKUP_BUCKET).list(prefix)) keys.push(info.key);
  return keys.sort();
}

/** A bucket double whose methods fail as the binding does, with `(code)` at the end. */
function failingBucket(overrides: Partial<R2BucketLike>): R2BucketLike {
  const unused = () => Promise.reject(new Error("not used in this test"));
  return { head: unused, get: unused, put: unused, createMultipartUpload: unused, delete: unused, list: unused, ...overrides };
}

describe("r2 driver under workerd", () => {
  it("the binding's conditional put resolves null when the key exists (what putIfAbsent relies on)", async () => {
    const bucket = env.BACKUP_BUCKET;
    const first = await bucket.put("r2x/onlyif", text("one"), { onlyIf: { etagDoesNotMatch: "*" } });
    expect(first?.key).toBe("r2x/onlyif");
    const second = await bucket.put("r2x/onlyif", text("two"), { onlyIf: { etagDoesNotMatch: "*" } });
    expect(second).toBeNull();
    expect(await (await bucket.get("r2x/onlyif"))?.text()).toBe("one");
  });

  it("the binding refuses a stream of unknown length (why streams are cut into parts)", async () => {
    const { stream } = patternStream(10);
    await expect(env.BACKUP_BUCKET.put("r2x/raw-stream", stream)).rejects.toThrow(/known length/);
  });

  it("sends a stream that fits in one part (exactly partSize) as a single put", async () => {
    const { bucket, calls } = recording(env.BACKUP_BUCKET);
    const storage = r2Storage(bucket, { partSize: 5 * MiB });
    const { stream, bytes } = patternStream(5 * MiB);
    await storage.put("r2x/one-part", stream);
    expect(calls).toEqual([`put ${5 * MiB}`]);
    expect(compareBytes(await readAll(await storage.get("r2x/one-part")), bytes)).toBe("same");
  });

  it("sends a longer stream as a multipart upload of equal parts and a shorter last one", async () => {
    const { bucket, calls } = recording(env.BACKUP_BUCKET);
    const storage = r2Storage(bucket, { partSize: 5 * MiB });
    const { stream, bytes } = patternStream(12 * MiB + 3);
    await storage.put("r2x/multi", stream);
    expect(calls).toEqual(["create", `part 1 ${5 * MiB}`, `part 2 ${5 * MiB}`, `part 3 ${2 * MiB + 3}`, "complete 3"]);
    expect((await storage.head("r2x/multi")).size).toBe(bytes.byteLength);
    expect(compareBytes(await readAll(await storage.get("r2x/multi")), bytes)).toBe("same");
  });

  it("aborts the multipart upload when the body fails after parts went up: old object kept, nothing new", async () => {
    const { bucket, calls } = recording(env.BACKUP_BUCKET);
    const storage = r2Storage(bucket, { partSize: 5 * MiB });
    await storage.put("r2x/abort/existing", text("the old object"));
    const err = await storage.put("r2x/abort/existing", failingStream(12 * MiB)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).message).toMatch(/injected failure/);
    expect(calls).toEqual(["put 14", "create", `part 1 ${5 * MiB}`, `part 2 ${5 * MiB}`, "abort"]);
    expect(decode(await readAll(await storage.get("r2x/abort/existing")))).toBe("the old object");
    await expect(storage.put("r2x/abort/new", failingStream(12 * MiB))).rejects.toThrow(/injected failure/);
    expect(await keysUnder("r2x/abort/")).toEqual(["r2x/abort/existing"]);
  });

  it("putIfAbsent takes a stream body, and refuses one over its buffer limit without writing", async () => {
    const storage = r2Storage(env.BACKUP_BUCKET, { putIfAbsentMaxBytes: MiB });
    expect(await storage.putIfAbsent("r2x/pia/stream", patternStream(1000).stream)).toBe(true);
    expect(await storage.putIfAbsent("r2x/pia/stream", patternStream(10).stream)).toBe(false);
    expect((await storage.head("r2x/pia/stream")).size).toBe(1000);
    let cancelled = false;
    const endless = new ReadableStream<Uint8Array>({
      pull: (controller) => controller.enqueue(new Uint8Array(300_000).fill(1)),
      cancel: () => {
        cancelled = true;
      },
    });
    const err = await storage.putIfAbsent("r2x/pia/big", endless).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).message).toMatch(/cannot be written conditionally/);
    expect(cancelled).toBe(true);
    expect(await keysUnder("r2x/pia/")).toEqual(["r2x/pia/stream"]);
  });

  it("rejects a part size below R2's 5 MiB minimum", () => {
    expect(() => r2Storage(env.BACKUP_BUCKET, { partSize: MiB })).toThrow(RangeError);
  });
});

describe("r2 driver error handling (bucket double)", () => {
  const fast = { baseDelayMs: 1, maxDelayMs: 2 };

  it("classifies R2's transient errors (10001, 10043, 10058) as retryable: the retry layer retries them and succeeds", async () => {
    let tries = 0;
    const storage = retryingStorage(r2Storage(
      failingBucket({
        head: async (key) => {
          tries++;
          if (tries === 1) throw new Error("head: We encountered an internal error. Please try again. (10001)");
          if (tries === 2) throw new Error("head: Service unavailable (10043)");
          if (tries === 3) throw new Error("head: Reduce your rate of requests (10058)");
          return { key, size: 3, uploaded: new Date(0) };
        },
      }),
    ), fast);
    expect(await storage.head("r2x/retry")).toEqual({ size: 3, lastModified: new Date(0) });
    expect(tries).toBe(4);
  });

  it("under the retry layer, gives up after the tries with kind unavailable, and does not retry a non-transient error", async () => {
    let tries = 0;
    const flaky = retryingStorage(r2Storage(
      failingBucket({
        delete: async () => {
          tries++;
          throw new Error("delete: Network connection lost.");
        },
      }),
    ), { attempts: 3, baseDelayMs: 1 });
    const err = (await flaky.delete("r2x/k").catch((e: unknown) => e)) as StorageError;
    expect(err).toBeInstanceOf(StorageError);
    expect([err.driver, err.operation, err.key, err.kind]).toEqual(["r2", "delete", "r2x/k", "unavailable"]);
    expect(err.message).toMatch(/gave up after 3 tries/);
    expect(tries).toBe(3);

    tries = 0;
    const broken = retryingStorage(r2Storage(
      failingBucket({
        get: async () => {
          tries++;
          throw new Error("get: The specified object name is not valid. (10020)");
        },
      }),
    ), fast);
    const bad = (await broken.get("r2x/k").catch((e: unknown) => e)) as StorageError;
    expect([bad.kind, bad.status, bad.retryable]).toEqual(["invalid_key", 400, false]);
    expect(tries).toBe(1);
  });

  it("putIfAbsent makes one try: a lost answer is a retryable error (the lock reads back), a taken key a loss", async () => {
    const stored = new Map<string, Uint8Array>();
    let puts = 0;
    const bucket = failingBucket({
      async put(key, value, options) {
        puts++;
        const exists = stored.has(key);
        if (options?.onlyIf && exists) return null;
        stored.set(key, value.slice());
        if (puts === 1) throw new Error("put: We encountered an internal error. Please try again. (10001)");
        return { key, size: value.byteLength, uploaded: new Date() };
      },
      async get(key) {
        const value = stored.get(key);
        if (!value) return null;
        return { key, size: value.byteLength, uploaded: new Date(), body: new Blob([value as Uint8Array<ArrayBuffer>]).stream() };
      },
    });
    const storage = retryingStorage(r2Storage(bucket), fast);
    await expect(storage.putIfAbsent("r2x/lost-answer", text("mine"))).rejects.toMatchObject({ retryable: true, kind: "unavailable" });
    expect(puts).toBe(1);
    expect(new TextDecoder().decode(await readAll((await bucket.get("r2x/lost-answer"))!.body))).toBe("mine");
    // Someone else's object is a loss.
    expect(await storage.putIfAbsent("r2x/lost-answer", text("other"))).toBe(false);
  });
});

/**
 * The binding as a transport that damages bodies over `limit` bytes: `short` passes on only
 * their first `limit` bytes (checksums as the driver sent them), `cut` fails the call as a
 * dropped connection does. Puts and multipart parts alike.
 */
function faultyBucket(mode: "short" | "cut", limit: number): R2BucketLike {
  const bucket = env.BACKUP_BUCKET as unknown as R2BucketLike;
  const damage = (value: Uint8Array): Uint8Array => {
    if (value.byteLength <= limit) return value;
    if (mode === "cut") throw new Error("Network connection lost.");
    return value.slice(0, limit);
  };
  return {
    head: (key) => bucket.head(key),
    get: (key) => bucket.get(key),
    put: async (key, value, options) => bucket.put(key, damage(value), options),
    delete: (key) => bucket.delete(key),
    list: (options) => bucket.list(options),
    async createMultipartUpload(key) {
      const upload = await bucket.createMultipartUpload(key);
      return {
        uploadPart: async (n, value) => upload.uploadPart(n, damage(value)),
        abort: () => upload.abort(),
        complete: (parts) => upload.complete(parts),
      };
    },
  };
}

storageFaultConformance(
  "r2 (workerd)",
  {
    shortWrite: async (limit) => ({ storage: r2Storage(faultyBucket("short", limit), { partSize: 5 * MiB }) }),
    cutWrite: async (limit) => ({ storage: r2Storage(faultyBucket("cut", limit), { partSize: 5 * MiB }) }),
  },
  "r2x/fault/",
);
