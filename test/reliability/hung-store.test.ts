/**
 * A hanging store must not hang everything (issue 12, part 2).
 *
 * The real service (startService, as `npm start` runs it) over HTTP, its store s3rver
 * behind a real TCP proxy that freezes (test/fixtures/freeze-proxy.ts): connections stay
 * open, nothing is forwarded, nothing is closed. A real Chroma. Small timeouts
 * (STORAGE_TIMEOUT=2s, short LOCK_TTLs) keep the file fast; the waits below are bounds on
 * how long a test may take, never measurements.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { startService, type RunningService } from "../../runtime/node.js";
import type { LogFields, Logger } from "../../lib/log.js";
import { listSnapshotIds } from "../../lib/snapshot/catalog.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { s3Storage } from "../../lib/storage/s3.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { startFreezeProxy, type FreezeProxy } from "../fixtures/freeze-proxy.js";
import { startS3rver, type TestS3rver } from "../fixtures/s3rver.js";
import { resetChroma } from "../handlers/harness.js";

const TOKEN = "hung-store-token-0123456789";
const BUCKET = "hung";
/** The first chunk upload of a backup: after the lock was taken, before anything is committed. */
const CHUNK_UPLOAD = /^PUT \/hung\/chromadb\/chunks\//m;

let chroma: TestChroma;
let s3: TestS3rver;
let proxy: FreezeProxy;
/** The store as seen directly (not through the proxy), to check what was committed. */
let direct: Storage;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  [chroma, s3] = await Promise.all([startTestChroma(), startS3rver([BUCKET])]);
  const { hostname, port } = new URL(s3.endpoint);
  proxy = await startFreezeProxy({ host: hostname, port: Number(port) });
  direct = withPrefix(s3Storage({ endpoint: s3.endpoint, bucket: BUCKET, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", forcePathStyle: true }), "chromadb/");
  // Enough records for several chunks: a backup is still uploading when the proxy freezes.
  await resetChroma(chroma.url, [{ name: "docs", count: 6000, dim: 96, seed: 12 }]);
}, 120_000);

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await proxy?.close();
  await Promise.all([chroma?.close(), s3?.close()]);
});

// Answers are checked field by field against the contract; `any` keeps that readable.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Body = any;

interface Service {
  running: RunningService;
  logs: { level: string; message: string; fields: LogFields }[];
  call(method: string, path: string, init?: { body?: unknown; signal?: AbortSignal }): Promise<{ status: number; body: Body }>;
}

/** The service as `npm start` builds it, its store behind the proxy. */
async function start(env: Record<string, string>): Promise<Service> {
  const dataDir = await mkdtemp(join(tmpdir(), "hung-store-"));
  const logs: Service["logs"] = [];
  const log: Logger = (level, message, fields = {}) => logs.push({ level, message, fields });
  const running = await startService(
    {
      PORT: "0",
      HOST: "127.0.0.1",
      BACKUP_API_TOKEN: TOKEN,
      DATA_DIR: dataDir,
      CHROMA_URL: chroma.url,
      RESTORE_ON_START: "never",
      STORAGE: "s3",
      S3_ENDPOINT: proxy.url,
      S3_BUCKET: BUCKET,
      S3_ACCESS_KEY_ID: "S3RVER",
      S3_SECRET_ACCESS_KEY: "S3RVER",
      S3_FORCE_PATH_STYLE: "true",
      ...env,
    },
    log,
  );
  cleanups.push(() => running.stop(), () => rm(dataDir, { recursive: true, force: true }));
  const call: Service["call"] = async (method, path, init = {}) => {
    const res = await fetch(`${running.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(init.body === undefined ? {} : { "content-type": "application/json" }) },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: init.signal,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  return { running, logs, call };
}

const snapshotIds = async () => (await listSnapshotIds(direct)).sort();

/** Waits until `check` holds, at most `ms` (a bound, not a measurement). */
async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A backup through the app, retried while a lease left by an abandoned one has not expired yet. */
async function backupWhenFree(service: Service, ms: number): Promise<{ status: number; body: Body }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await service.call("POST", "/backups");
    if (r.status !== 409 || Date.now() > deadline) return r;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe("a store that hangs (s3rver behind a frozen proxy)", () => {
  it("a backup fails with 503 storage_unavailable saying how long it waited; /status answers with the lock unknown; a second backup gets 409 at once; after the thaw nothing partial is visible and the next backup succeeds", async () => {
    proxy.thaw();
    const service = await start({ STORAGE_TIMEOUT: "2s", LOCK_TTL: "10s" });
    const first = await service.call("POST", "/backups");
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const before = await snapshotIds();
    expect(before).toEqual([first.body.id]);
    // Something new, so the next backup uploads chunks.
    await resetChroma(chroma.url, [{ name: "docs", count: 6000, dim: 96, seed: 13 }]);

    proxy.freezeWhen(CHUNK_UPLOAD);
    onTestFinished(() => proxy.thaw());
    const hung = service.call("POST", "/backups");
    await until(() => proxy.frozen, 30_000, "the backup's first chunk upload");

    // A competing backup is refused at once, naming the running one, without asking the store.
    const second = await service.call("POST", "/backups");
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe("conflict");
    expect(second.body.error.message).toMatch(/another backup is running in this instance/);
    expect(second.body.error.details).toMatchObject({ operation: "backup" });

    // While it hangs: /status answers, the lock "unknown", and says which parts it could not read.
    const status = await service.call("GET", "/status");
    expect(status.status).toBe(200);
    expect(status.body.lock).toBe("unknown");
    expect(status.body.errors.map((e: { part: string }) => e.part)).toEqual(expect.arrayContaining(["lock", "catalog", "objects"]));
    for (const e of status.body.errors) expect(e.message).toMatch(/no answer within 4s|did not answer within/);
    expect(status.body.chroma.reachable).toBe(true);
    expect(status.body.running).toMatchObject({ operation: "backup" });

    // The hung backup ends by itself with a 503 that says what did not answer, and for how long.
    const failed = await hung;
    expect(failed.status, JSON.stringify(failed.body)).toBe(503);
    expect(failed.body.error.code).toBe("storage_unavailable");
    expect(failed.body.error.message).toMatch(/^storage \(s3\) failed: s3: \w+ \S+ (\(\w+ \d+\) )?did not answer within 2s \(gave up after 2 tries in \d+(\.\d)?s\)$/);
    // Every retry was logged at warn, with the driver, operation, key, attempt and error.
    const retries = service.logs.filter((l) => l.level === "warn" && /retrying/.test(l.message));
    expect(retries.length).toBeGreaterThan(0);
    expect(retries[0]!.fields).toMatchObject({ driver: "s3", attempt: 1 });
    expect(retries[0]!.fields.operation).toEqual(expect.any(String));
    expect(retries[0]!.fields.key).toEqual(expect.any(String));
    expect(retries[0]!.fields.error).toMatch(/did not answer within 2s/);

    proxy.thaw();
    // Nothing of the failed backup is visible: no manifest.
    expect(await snapshotIds()).toEqual(before);
    // The lock was released (the delete held by the frozen proxy goes through now) or expires: the next backup goes through.
    const next = await backupWhenFree(service, 15_000);
    expect(next.status, JSON.stringify(next.body)).toBe(201);
    expect(await snapshotIds()).toEqual([...before, next.body.id].sort());
    const healthy = await service.call("GET", "/status");
    expect(healthy.body).toMatchObject({ lock: null, errors: [], running: null });
    expect(healthy.body.storage.snapshots).toBe(2);
  }, 90_000);

  it("a lease that cannot be renewed stops the backup early with 503 (never 500), and nothing is committed", async () => {
    proxy.thaw();
    // Store calls wait 20s, the lease lasts 2s: the lease runs out long before any storage timeout.
    const service = await start({ STORAGE_TIMEOUT: "20s", LOCK_TTL: "2s" });
    await resetChroma(chroma.url, [{ name: "docs", count: 6000, dim: 96, seed: 14 }]);
    const before = await snapshotIds();
    proxy.freezeWhen(CHUNK_UPLOAD);
    onTestFinished(() => proxy.thaw());
    const r = await service.call("POST", "/backups");
    expect(proxy.frozen).toBe(true);
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.error.code).toBe("storage_unavailable");
    expect(r.body.error.message).toMatch(/the lock lease could not be renewed for \d+(\.\d)?s.*the operation was abandoned, nothing was committed/);
    proxy.thaw();
    // The uploads it left in flight go through now; the manifest never does.
    await until(() => service.running.service.runningOperation === null, 5000, "the operation record to clear");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(await snapshotIds()).toEqual(before);
  }, 90_000);

  it("a client that disconnects mid-backup cancels it: nothing is committed afterwards, even once the store answers again", async () => {
    proxy.thaw();
    // Long timeouts and lease: nothing but the disconnect stops this backup.
    const service = await start({ STORAGE_TIMEOUT: "30s", LOCK_TTL: "30s" });
    await resetChroma(chroma.url, [{ name: "docs", count: 6000, dim: 96, seed: 15 }]);
    const before = await snapshotIds();
    proxy.freezeWhen(CHUNK_UPLOAD);
    onTestFinished(() => proxy.thaw());
    const client = new AbortController();
    const request = service.call("POST", "/backups", { signal: client.signal }).catch((e: unknown) => e);
    await until(() => proxy.frozen, 30_000, "the backup's first chunk upload");
    client.abort();
    expect(await request).toMatchObject({ name: "AbortError" });
    // @hono/node-server aborts the request's signal on the disconnect: the backup stops
    // while the store is still frozen.
    await until(() => service.running.service.runningOperation === null, 10_000, "the cancelled backup to stop");
    proxy.thaw();
    // Without the cancellation, the backup would now finish its uploads and commit.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(await snapshotIds()).toEqual(before);
    // The lock was released (its delete waited for the thaw): a new backup is taken long before the 30s lease could expire.
    const next = await backupWhenFree(service, 15_000);
    expect(next.status, JSON.stringify(next.body)).toBe(201);
  }, 90_000);
});
