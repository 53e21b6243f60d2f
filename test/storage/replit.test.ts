import { afterAll, beforeAll, expect, it } from "vitest";
import { StorageError } from "../../lib/storage/errors.js";
import { replitStorage } from "../../lib/storage/replit.js";
import { retryingStorage } from "../../lib/storage/retry.js";
import { readAll } from "../../lib/storage/streams.js";
import { startGcsServer, type GcsServer } from "../fixtures/gcs-server.js";
import { startBodyFaultProxy } from "../fixtures/body-fault-proxy.js";
import { storageConformance, type FaultTarget } from "./conformance.js";

// The client reads STORAGE_EMULATOR_HOST when it is constructed (lazily, on first use),
// so the server starts, and the variable is set, before any driver call.
let server: GcsServer;
let bucketNumber = 0;
/** A driver on its own empty bucket, under the retry layer with fast retries (attempts 1: the bare driver). */
const newStorage = (attempts = 5) => {
  const driver = replitStorage({ bucketId: `bucket-${++bucketNumber}` });
  return attempts === 1 ? driver : retryingStorage(driver, { attempts, baseDelayMs: 5, maxDelayMs: 20 });
};

beforeAll(async () => {
  server = await startGcsServer();
  process.env.STORAGE_EMULATOR_HOST = server.url;
});
afterAll(async () => {
  delete process.env.STORAGE_EMULATOR_HOST;
  await server?.close();
});

/**
 * A driver whose requests go through a proxy that damages upload bodies. The client reads
 * STORAGE_EMULATOR_HOST on its first call, which comes after this returns; the variable is
 * put back by cleanup (the suite's tests run one at a time).
 */
async function throughFaultProxy(mode: "short" | "cut", limit: number): Promise<FaultTarget> {
  const proxy = await startBodyFaultProxy(server.url, mode, limit);
  process.env.STORAGE_EMULATOR_HOST = proxy.url;
  return {
    storage: newStorage(2),
    async cleanup() {
      process.env.STORAGE_EMULATOR_HOST = server.url;
      await proxy.close();
    },
  };
}

storageConformance({
  name: "replit",
  create: async () => ({ storage: newStorage() }),
  faults: { shortWrite: (limit) => throughFaultProxy("short", limit), cutWrite: (limit) => throughFaultProxy("cut", limit) },
});

const text = (s: string) => new TextEncoder().encode(s);

it("replit: lists more than one page through pageToken requests", async () => {
  const storage = newStorage();
  const bucket = `bucket-${bucketNumber}`;
  // Pages hold 1,000 objects: 2,001 keys take three requests.
  const keys = Array.from({ length: 2001 }, (_, i) => `paged/${String(i).padStart(4, "0")}`);
  for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => storage.put(k, text(k))));
  const before = server.requests.length;
  const seen: string[] = [];
  for await (const info of storage.list("paged/")) {
    seen.push(info.key);
    expect(info.size).toBe(info.key.length);
    expect(info.lastModified).toBeInstanceOf(Date);
  }
  expect(seen.sort()).toEqual(keys);
  const lists = server.requests.slice(before).filter((r) => r.method === "GET" && r.path === `/b/${bucket}/o`);
  expect(lists.map((r) => r.query.prefix)).toEqual(["paged/", "paged/", "paged/"]);
  expect(lists[0]!.query.pageToken).toBeUndefined();
  expect(lists[1]!.query.pageToken).toBeTruthy();
  expect(lists[2]!.query.pageToken).toBeTruthy();
  expect(lists[1]!.query.pageToken).not.toBe(lists[2]!.query.pageToken);
});

it("replit: a read the server answers with 503 is retried by the layer above; the driver alone makes one try", async () => {
  const storage = newStorage();
  await storage.put("retry/key", text("survives 503s"));

  server.failNext(2, { method: "GET", match: /alt=media/ });
  const before = server.requests.length;
  expect(new TextDecoder().decode(await readAll(await storage.get("retry/key")))).toBe("survives 503s");
  const downloads = server.requests.slice(before).filter((r) => r.query.alt === "media");
  expect(downloads.map((r) => r.status)).toEqual([503, 503, 200]);

  server.failNext(2, { method: "GET", match: /\/o\/retry%2Fkey(\?|$)/ });
  expect((await storage.head("retry/key")).size).toBe(13);

  // The driver alone makes one try: the 503 surfaces as a retryable, typed error.
  server.failNext(1, { method: "GET", match: /alt=media/ });
  const err = await newStorage(1)
    .get("retry/key")
    .then(
      () => null,
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(StorageError);
  expect(err).toMatchObject({ driver: "replit", operation: "get", status: 503, retryable: true, kind: "unavailable" });
});
