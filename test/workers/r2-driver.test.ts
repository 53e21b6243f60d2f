import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ResourceLimitError } from "../../lib/errors.js";
import { StorageError } from "../../lib/storage/errors.js";
import { r2Storage, type R2BucketLike } from "../../lib/storage/r2.js";
import { retryingStorage } from "../../lib/storage/retry.js";
import { readAll } from "../../lib/storage/streams.js";
import { storageFaultConformance } from "../storage/conformance.js";

// R2-specific behaviour, beside the shared conformance suite (r2.test.ts). Both files use
// the one emulated bucket, so every key here lives under "r2x/", which the suite never uses.

const text = (s: string) => new TextEncoder().encode(s);

/** A bucket double whose methods fail as the binding does, with `(code)` at the end. */
function failingBucket(overrides: Partial<R2BucketLike>): R2BucketLike {
  const unused = () => Promise.reject(new Error("not used in this test"));
  return { head: unused, get: unused, put: unused, delete: unused, list: unused, ...overrides };
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

  it("Cloudflare's \"Too many subrequests\" is a ResourceLimitError naming the limit, not retried (no fault of the store)", async () => {
    let tries = 0;
    const storage = retryingStorage(r2Storage(
      failingBucket({
        put: async () => {
          tries++;
          throw new Error("Too many subrequests.");
        },
      }),
    ), fast);
    const err = await storage.put("r2x/limit", text("x")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceLimitError);
    expect((err as ResourceLimitError).message).toMatch(/subrequest limit.*limits\.subrequests/);
    expect((err as ResourceLimitError).details).toEqual({ limit: "subrequests" });
    expect(tries).toBe(1);
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
 * dropped connection does.
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
  };
}

storageFaultConformance(
  "r2 (workerd)",
  {
    shortWrite: async (limit) => ({ storage: r2Storage(faultyBucket("short", limit)) }),
    cutWrite: async (limit) => ({ storage: r2Storage(faultyBucket("cut", limit)) }),
  },
  "r2x/fault/",
);
