/**
 * Storage faults and a Chroma that goes away (issue "Reliability and security", faults).
 *
 * 1. The fault injector itself (test/fixtures/faulty-storage.ts), and what the engine
 *    makes of each fault: a read cut short or garbled is never trusted (size and sha256
 *    checks), a body that breaks mid-upload leaves nothing behind, a torn read of a live
 *    lease does not free the lock.
 * 2. Twenty backups in a row through the HTTP app over an fs store where 10% of storage
 *    calls fail at random (seeded): each one either commits a snapshot that verifies (and,
 *    for some, restores under another name with the same counts) or fails with a clear
 *    error and leaves the store's snapshots exactly as they were.
 * 3. Chroma stopped in the middle of a backup, and of a restore: a 503
 *    chroma_unavailable, nothing committed, the live collection intact; once a new Chroma
 *    serves the same data dir, the backup succeeds and a rerun of the restore completes.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { ConflictError, SnapshotCorruptError } from "../../lib/errors.js";
import { StoreLock } from "../../lib/lock.js";
import { silentLogger } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { isAsideCollection } from "../../lib/snapshot/aside.js";
import { readCatalog, readManifest } from "../../lib/snapshot/catalog.js";
import { chunkKey, sha256Hex } from "../../lib/snapshot/chunk.js";
import { fetchVerifiedChunk } from "../../lib/snapshot/read-chunk.js";
import { verifySnapshot } from "../../lib/snapshot/verify.js";
import { StorageError } from "../../lib/storage/errors.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { retryingStorage } from "../../lib/storage/retry.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, deleteRecords, dumpCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { faultyStorage, type FaultKind } from "../fixtures/faulty-storage.js";
import { client, expectError, makeApp, resetChroma, type CollectionSpec } from "../handlers/harness.js";
import { expectSameRecords, parseDump, type DumpedRecord } from "../snapshot/compare.js";

const bytesOf = (text: string) => new TextEncoder().encode(text);
/** The retry layer with short waits, as the tests build it. */
const FAST_RETRY = { baseDelayMs: 20, maxDelayMs: 200, timeoutMs: 5000 };
const textOf = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

async function tempStore(): Promise<{ root: string; storage: Storage }> {
  const root = await mkdtemp(join(tmpdir(), "faults-store-"));
  onTestFinished(() => rm(root, { recursive: true, force: true }));
  return { root, storage: fsStorage(root) };
}

/** Every file under `dir`, relative, including the fs driver's .partial/ area. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1)).sort();
}

/** Every object under chunks/ holds exactly the bytes its name hashes: no torn or partial object. */
async function expectEveryChunkWhole(storage: Storage): Promise<number> {
  let n = 0;
  for await (const info of storage.list("chunks/")) {
    const hash = info.key.slice(info.key.lastIndexOf("/") + 1);
    expect(await sha256Hex(await readAll(await storage.get(info.key))), `chunk object ${info.key}`).toBe(hash);
    n++;
  }
  return n;
}

describe("the fault injector, and what the engine makes of each fault", () => {
  it("injects every kind as documented, and the same seed draws the same faults", async () => {
    const inner = memoryStorage();
    await inner.put("a/one", bytesOf("0123456789"));
    const only = (kind: FaultKind) => faultyStorage(inner, { plan: () => kind, hangMs: 30 });

    const t = only("transient");
    const e1 = await t.head("a/one").catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(StorageError);
    expect(e1).toMatchObject({ kind: "unavailable", retryable: true });
    expect([503, 429]).toContain((e1 as StorageError).status);

    await expect(only("fatal").get("a/one")).rejects.toMatchObject({ kind: "failed", retryable: false, status: 403 });

    const started = Date.now();
    await expect(only("hang").delete("a/one")).rejects.toMatchObject({ kind: "unavailable", retryable: true, message: /timed out after 30 ms/ });
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);

    const short = await readAll(await only("truncate").get("a/one"));
    expect(short.byteLength).toBeLessThan(10);
    expect(textOf(short)).toBe("0123456789".slice(0, short.byteLength));

    const flipped = await readAll(await only("corrupt").get("a/one"));
    expect(flipped.byteLength).toBe(10);
    expect(textOf(flipped)).not.toBe("0123456789");

    await expect(only("get-stream-error").get("a/one").then((s) => readAll(s))).rejects.toMatchObject({ retryable: true, message: /mid-download/ });
    // A missing key is still not_found, never a fault's error, for the reading faults.
    await expect(only("truncate").get("a/missing")).rejects.toMatchObject({ kind: "not_found" });

    await expect(only("put-stream-error").put("a/two", bytesOf("abcdef"))).rejects.toMatchObject({ retryable: true, message: /mid-upload/ });
    await expect(inner.head("a/two")).rejects.toMatchObject({ kind: "not_found" });

    // A listing breaks before its first key, or part way through.
    const drain = async (s: Storage) => {
      for await (const _info of s.list("a/")) {
        // keys until it breaks
      }
    };
    await expect(drain(only("transient"))).rejects.toMatchObject({ retryable: true });

    // Random draws: the same seed and the same calls give the same faults.
    const draw = async (seed: number) => {
      const f = faultyStorage(inner, { seed, rate: 0.3, hangMs: 1 });
      for (let i = 0; i < 200; i++) await f.head("a/one").catch(() => {});
      return f.events.map((e) => `${e.n}:${e.kind}`);
    };
    const first = await draw(7);
    expect(first.length).toBeGreaterThan(30);
    expect(first.length).toBeLessThan(90);
    expect(await draw(7)).toEqual(first);
    expect(await draw(8)).not.toEqual(first);
  });

  it("a read cut short or garbled is never trusted: the size and sha256 checks catch it; a bad read is read again", async () => {
    const inner = memoryStorage();
    const bytes = new Uint8Array(5000).map((_, i) => (i * 7) % 256);
    const hash = await sha256Hex(bytes);
    await inner.put(chunkKey(hash), bytes);
    const ref = { hash, records: 1, bytes: bytes.byteLength, decodedBytes: 0 };

    for (const kind of ["truncate", "corrupt"] as const) {
      // Every read of the chunk bad: declared corrupt, naming the chunk; never returned.
      const always = faultyStorage(inner, { plan: ({ key }) => (key === chunkKey(hash) ? kind : null) });
      const err = await fetchVerifiedChunk(always, ref, "coll").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotCorruptError);
      expect((err as SnapshotCorruptError).chunk).toBe(hash);
      expect((err as Error).message).toMatch(kind === "truncate" ? /is \d+ bytes, the manifest records 5000/ : /fails its checksum/);
      expect(always.stats.byKind[kind], "read three times before declared corrupt").toBe(3);

      // Only the first read bad: the second read is checked and returned.
      const once = faultyStorage(inner, { plan: ({ n }) => (n === 0 ? kind : null) });
      expect(await fetchVerifiedChunk(once, ref, "coll")).toEqual(bytes);
      expect(once.stats).toMatchObject({ faults: 1, retried: 1, recovered: 1 });
    }

    // Transient failures are retried (by the store's retry layer); a non-retryable one is not.
    const flaky = faultyStorage(inner, { plan: ({ n }) => (n < 2 ? (n === 0 ? "transient" : "hang") : null), hangMs: 20 });
    expect(await fetchVerifiedChunk(retryingStorage(flaky, FAST_RETRY), ref, "coll")).toEqual(bytes);
    expect(flaky.stats).toMatchObject({ faults: 2, retried: 2, recovered: 1 });
    const refused = faultyStorage(inner, { plan: () => "fatal" });
    await expect(fetchVerifiedChunk(retryingStorage(refused, FAST_RETRY), ref, "coll")).rejects.toMatchObject({ status: 403 });
    expect(refused.stats.calls).toBe(1);
  });

  it("a torn read of a live lease does not free the lock", async () => {
    const { storage } = await tempStore();
    const holder = await new StoreLock(storage, "maintenance", { ttlMs: 60_000 }).acquire("backup", "first");
    onTestFinished(() => holder.release());
    // The second caller's first read of the lease comes back cut short.
    let torn = false;
    const faulty = faultyStorage(storage, {
      plan: ({ operation, key }) => {
        if (torn || operation !== "get" || !key.startsWith("locks/")) return null;
        torn = true;
        return "truncate";
      },
    });
    await expect(new StoreLock(faulty, "maintenance").acquire("prune", "second")).rejects.toBeInstanceOf(ConflictError);
    expect(faulty.stats.byKind.truncate).toBe(1);
    await holder.assertHeld();
  });
});

describe("twenty backups in a row while 10% of storage calls fail at random", () => {
  const ALPHA: CollectionSpec = { name: "alpha", count: 300, dim: 8, seed: 41 };
  const BETA: CollectionSpec = { name: "beta", count: 200, dim: 16, seed: 42 };
  const BACKUPS = 20;
  let chroma: TestChroma;
  let rest: ChromaRest;

  beforeAll(async () => {
    chroma = await startTestChroma();
    rest = new ChromaRest({ url: chroma.url });
    await resetChroma(chroma.url, [ALPHA, BETA]);
  });
  afterAll(async () => {
    await chroma?.close();
  });

  const dump = async (name: string) => parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, name)));
  const count = async (name: string) => rest.count(await collectionId(chroma.url, name));

  it("each backup commits a snapshot that verifies and restores, or fails with a clear error and no manifest; transient failures are retried", async () => {
    const { root, storage } = await tempStore();
    // Mostly throttling and timeouts, as real stores fail; now and then a refused request.
    const faulty = faultyStorage(storage, {
      seed: Number(process.env.FAULT_SEED ?? 20240611), // FAULT_SEED=n to explore other draws
      rate: 0.1,
      hangMs: 100,
      weights: { transient: 4, hang: 1, truncate: 1, corrupt: 1, "get-stream-error": 1, "put-stream-error": 1, fatal: 0.25 },
    });
    // A short lease: a lease whose release failed for good (a refused delete) blocks the next backups for 2 s, not 60.
    // The store as the service builds it: the driver (here with faults) under the one retry layer.
    const service = new BackupService({ chroma: rest, storage: retryingStorage(faulty, { ...FAST_RETRY, attempts: 3 }), storagePrefix: "chromadb/", retention: { keepLast: 5, keepSafety: 3 }, log: silentLogger, lockTtlMs: 2000 });
    const api = client(makeApp(service));
    const ids = async () => (await readCatalog(storage)).snapshots.map((m) => m.id).sort();

    const outcomes: { i: number; status: number; why?: string; ms: number; faults: number }[] = [];
    const restored: string[] = [];
    let restoreAttempts = 0;
    for (let i = 0; i < BACKUPS; i++) {
      if (i > 0) {
        // Every backup has something new to write: changed records in alpha, new ones in beta.
        const changed = makeRecords(ALPHA.count, ALPHA.dim, 1000 + i, "alpha").slice((i * 37) % 280, ((i * 37) % 280) + 15);
        await addRecords(chroma.url, await collectionId(chroma.url, "alpha"), changed, "upsert");
        await addRecords(chroma.url, await collectionId(chroma.url, "beta"), makeRecords(5, BETA.dim, 2000 + i, `beta-new${i}`));
      }
      const before = await ids();
      const source = { alpha: await dump("alpha"), beta: await dump("beta") };
      const faultsBefore = faulty.stats.faults;
      const started = Date.now();
      const r = await api.post("/backups", {});
      const details = r.body?.error?.details;
      const why = r.status === 201 ? undefined : r.status === 409 ? "conflict (a lease left behind)" : `${r.body?.error?.code} (${details?.operation} ${details?.status ?? "timeout"})`;
      outcomes.push({ i, status: r.status, why, ms: Date.now() - started, faults: faulty.stats.faults - faultsBefore });
      const after = await ids();

      if (r.status !== 201) {
        // A clear error, and the store's snapshots exactly as they were. A 409: the release of
        // an earlier lease was refused for good, so that lease holds until it expires.
        if (r.status === 409) expectError(r, 409, "conflict", /held by .* until/);
        else expectError(r, 503, "storage_unavailable", /storage \(fs\) failed: .*injected/);
        expect(after, `backup ${i} failed but changed the snapshots`).toEqual(before);
        if (r.status === 409) {
          // As a scheduler would: try again once the lease named in the answer has expired.
          const wait = Date.parse(r.body.error.details.expiresAt) - Date.now();
          expect(wait).toBeLessThanOrEqual(2000);
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait) + 50));
        }
        continue;
      }
      const id = r.body.id as string;
      expect(after).toContain(id);
      expect(after.filter((x) => !before.includes(x)), "exactly one new snapshot").toEqual([id]);
      // Checked on the store itself, without faults.
      const manifest = await readManifest(storage, id);
      const report = await verifySnapshot(storage, manifest);
      expect(report.errors).toEqual([]);
      expect(report.ok).toBe(true);
      expect(Object.fromEntries(manifest.collections.map((c) => [c.name, c.records]))).toEqual({ alpha: source.alpha.size, beta: source.beta.size });
      expect(report.records).toBe(source.alpha.size + source.beta.size);

      if (i % 4 === 0) {
        // Restored under other names through the same faulty store: the same records.
        const rename = { alpha: `alpha-r${i}`, beta: `beta-r${i}` };
        let reply;
        for (let attempt = 1; attempt <= 5; attempt++) {
          restoreAttempts++;
          reply = await api.post("/restore", { snapshot: id, rename });
          if (reply.status === 200) break;
          expectError(reply, 503, "storage_unavailable", /injected/);
        }
        expect(reply!.status, reply!.text).toBe(200);
        expect(reply!.body.collections).toEqual([
          { name: rename.alpha, records: source.alpha.size },
          { name: rename.beta, records: source.beta.size },
        ]);
        expect(await count(rename.alpha)).toBe(source.alpha.size);
        expect(await count(rename.beta)).toBe(source.beta.size);
        if (restored.length === 0) {
          expectSameRecords(source.alpha, await dump(rename.alpha), false);
          expectSameRecords(source.beta, await dump(rename.beta), false);
        }
        restored.push(id);
        for (const name of Object.values(rename)) await rest.deleteCollection(name);
      }
    }

    const committed = outcomes.filter((o) => o.status === 201).length;
    const stats = faulty.stats;
    console.log(
      `${BACKUPS} backups, 10% of ${stats.calls} storage calls failing (${stats.faults} faults: ${JSON.stringify(stats.byKind)}): ` +
        `${committed} committed, ${BACKUPS - committed} failed cleanly (${outcomes.filter((o) => o.status !== 201).map((o) => `#${o.i} ${o.why}`).join(", ")}); ` +
        `${stats.retried} faults followed by another try of the same call, ${stats.recovered} of them went through; ` +
        `${restored.length} snapshots restored under new names in ${restoreAttempts} attempts; ` +
        `backup took ${Math.min(...outcomes.map((o) => o.ms))}-${Math.max(...outcomes.map((o) => o.ms))} ms`,
    );
    expect(stats.faults).toBeGreaterThan(30);
    expect(stats.retried, "transient failures are retried").toBeGreaterThan(stats.faults / 2);
    expect(stats.recovered).toBeGreaterThan(stats.faults / 2);
    expect(committed, "most backups succeed").toBeGreaterThan(BACKUPS / 2);
    expect(restored.length).toBeGreaterThanOrEqual(2);

    // The store as a whole: every snapshot verifies, no damaged manifest, no torn object,
    // nothing left half-written, the lock free, no collection left built aside.
    const catalog = await readCatalog(storage);
    expect(catalog.damaged).toEqual([]);
    expect(catalog.snapshots.length).toBeGreaterThan(0);
    for (const m of catalog.snapshots) expect((await verifySnapshot(storage, m)).ok, `snapshot ${m.id}`).toBe(true);
    expect(await expectEveryChunkWhole(storage)).toBeGreaterThan(0);
    expect((await filesUnder(root)).filter((f) => f.startsWith(".partial")), "half-written files").toEqual([]);
    expect(await new StoreLock(storage).current()).toBeNull();
    expect((await listCollectionNames(chroma.url)).filter(isAsideCollection)).toEqual([]);
  }, 150_000);

  it("a chunk whose every read comes back cut short: verify names it, restore answers 422 and leaves the collection as it was", async () => {
    const { storage } = await tempStore();
    const service = new BackupService({ chroma: rest, storage, storagePrefix: "chromadb/", retention: { keepLast: 5, keepSafety: 3 }, log: silentLogger });
    const r = await client(makeApp(service)).post("/backups", { collections: ["alpha"] });
    expect(r.status, r.text).toBe(201);
    const manifest = await readManifest(storage, r.body.id);
    const hash = manifest.collections[0]!.chunks[0]!.hash;

    const faulty = faultyStorage(storage, { plan: ({ operation, key }) => (operation === "get" && key === chunkKey(hash) ? "truncate" : null) });
    const api = client(makeApp(new BackupService({ chroma: rest, storage: faulty, storagePrefix: "chromadb/", retention: { keepLast: 5, keepSafety: 3 }, log: silentLogger })));
    const verify = await api.post(`/backups/${manifest.id}/verify`);
    expect(verify.status).toBe(200);
    expect(verify.body.ok).toBe(false);
    expect(verify.body.errors).toEqual([expect.objectContaining({ chunk: hash, collection: "alpha", message: expect.stringMatching(/bytes, the manifest records/) })]);

    await deleteRecords(chroma.url, await collectionId(chroma.url, "alpha"), ["alpha-0", "alpha-1"]);
    const live = await dump("alpha");
    const restore = await api.post("/restore", { snapshot: manifest.id, collections: ["alpha"], safetySnapshot: false });
    expectError(restore, 422, "snapshot_corrupt", new RegExp(hash));
    expect(restore.body.error.details).toMatchObject({ chunk: hash, collection: "alpha" });
    expectSameRecords(live, await dump("alpha"), false);
    expect((await listCollectionNames(chroma.url)).filter(isAsideCollection)).toEqual([]);
    expect(faulty.stats.byKind.truncate).toBeGreaterThanOrEqual(6);
  });
});

describe("Chroma stops in the middle of a backup, and of a restore", () => {
  // "first" spans three pages of a backup's reads (500 records each).
  const FIRST = { name: "first", count: 1200, dim: 8, seed: 51 };
  const SECOND = { name: "second", count: 300, dim: 12, seed: 52 };
  let dataDir: string;
  let port: number;
  let chroma: EmbeddedChroma | null = null;
  let storeRoot: string;
  let storage: Storage;
  /** Decides, per Chroma request, whether Chroma stops just before it is sent. */
  let stopBefore: ((url: string, method: string) => boolean) | null = null;
  let stopped = 0;
  let api: ReturnType<typeof client>;
  let snapshotId: string;
  let atSnapshot: Record<string, Map<string, DumpedRecord>>;

  const url = () => `http://127.0.0.1:${port}`;
  const dump = async (name: string) => parseDump(await dumpCollection(url(), await collectionId(url(), name)));
  const names = () => listCollectionNames(url());
  const ids = async () => (await readCatalog(storage)).snapshots.map((m) => m.id).sort();

  async function startChroma(): Promise<void> {
    chroma = await startEmbeddedChroma({ dataDir, port });
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "faults-chroma-"));
    storeRoot = await mkdtemp(join(tmpdir(), "faults-chroma-store-"));
    storage = fsStorage(storeRoot);
    chroma = await startEmbeddedChroma({ dataDir });
    port = chroma.port;
    await resetChroma(url(), [FIRST, SECOND]);
    // Chroma through a fetch that can stop it between two requests, as a crash would.
    const fetchStopping: typeof fetch = async (input, init) => {
      if (stopBefore?.(String(input), init?.method ?? "GET")) {
        stopBefore = null;
        stopped++;
        await chroma!.stop();
      }
      return fetch(input, init);
    };
    const service = new BackupService({
      chroma: new ChromaRest({ url: url(), fetch: fetchStopping, timeoutMs: 10_000 }),
      storage,
      storagePrefix: "chromadb/",
      retention: { keepLast: 24, keepSafety: 3 },
      log: silentLogger,
    });
    api = client(makeApp(service));
  });
  afterAll(async () => {
    await chroma?.stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(storeRoot, { recursive: true, force: true });
  });

  it("mid-backup: 503 chroma_unavailable, nothing committed, the lock free; with Chroma back the backup succeeds", async () => {
    const first = await api.post("/backups", {});
    expect(first.status, first.text).toBe(201);
    // New data in both collections, so the next backup uploads chunks before it fails.
    await addRecords(url(), await collectionId(url(), "first"), makeRecords(40, FIRST.dim, 61, "first-more"));
    await addRecords(url(), await collectionId(url(), "second"), makeRecords(40, SECOND.dim, 62, "second-more"));
    const before = await ids();
    const secondId = await collectionId(url(), "second");
    const chunksBefore = (await filesUnder(storeRoot)).filter((f) => f.startsWith("chunks/"));

    // Chroma stops once every page of "first" was read (its new chunk uploaded), before the first page of "second".
    stopBefore = (u) => u.endsWith(`/collections/${secondId}/get`);
    const r = await api.post("/backups", {});
    expect(stopped).toBe(1);
    expectError(r, 503, "chroma_unavailable", new RegExp(`Chroma at ${url().replace(/\./g, "\\.")} is unreachable`));
    expect(await ids(), "no snapshot committed").toEqual(before);
    const orphans = (await filesUnder(storeRoot)).filter((f) => f.startsWith("chunks/") && !chunksBefore.includes(f));
    expect(orphans.length, "the chunk of 'first' was uploaded before Chroma stopped").toBeGreaterThanOrEqual(1);
    expect(await new StoreLock(storage).current(), "the lock was released").toBeNull();
    const status = await api.get("/status");
    expect(status.status).toBe(200);
    expect(status.body.chroma.reachable).toBe(false);

    await startChroma();
    const again = await api.post("/backups", {});
    expect(again.status, again.text).toBe(201);
    expect(again.body.records).toBe(FIRST.count + SECOND.count + 80);
    expect(again.body.newBytes, "the chunk uploaded by the failed run is reused").toBeLessThan(again.body.bytes);
    const manifest = await readManifest(storage, again.body.id);
    expect((await verifySnapshot(storage, manifest)).ok).toBe(true);
    snapshotId = again.body.id;
    atSnapshot = { first: await dump("first"), second: await dump("second") };
  });

  /** Changes "first" so a restore has something to undo; returns its content now. */
  async function changeFirst(seed: number): Promise<Map<string, DumpedRecord>> {
    const id = await collectionId(url(), "first");
    await deleteRecords(url(), id, Array.from({ length: 100 }, (_, i) => `first-${i * 7}`));
    await addRecords(url(), id, makeRecords(FIRST.count, FIRST.dim, seed, "first").slice(500, 550), "upsert");
    return dump("first");
  }

  it("mid-restore, while a collection is built aside: 503, the live collection intact; a rerun restores everything", async () => {
    expect(snapshotId, "needs the snapshot of the previous test").toBeDefined();
    const live = await changeFirst(71);
    // The first add is the restore's probe of the target (to a collection id that does not exist); the second writes into the aside.
    let adds = 0;
    stopBefore = (u) => u.endsWith("/add") && ++adds === 2;
    const r = await api.post("/restore", { snapshot: snapshotId });
    expect(stopped).toBe(2);
    expectError(r, 503, "chroma_unavailable", /unreachable/);

    await startChroma();
    expectSameRecords(live, await dump("first"), false);
    expectSameRecords(atSnapshot.second!, await dump("second"), false);
    const leftAside = (await names()).filter(isAsideCollection);
    expect(leftAside, "the collection being built aside, left by the failed restore").toHaveLength(1);

    const rerun = await api.post("/restore", { snapshot: snapshotId });
    expect(rerun.status, rerun.text).toBe(200);
    expect(rerun.body.restored).toBe(true);
    expectSameRecords(atSnapshot.first!, await dump("first"), false);
    expectSameRecords(atSnapshot.second!, await dump("second"), false);
    expect(await names(), "the rerun swept what the failed restore left aside").toEqual(["first", "second"]);
  });

  it("mid-restore, between dropping the old collection and renaming the new one in: a rerun restores it", async () => {
    expect(snapshotId, "needs the snapshot of the first test").toBeDefined();
    const live = await changeFirst(72);
    stopBefore = (u, method) => method === "PUT" && /\/collections\/[0-9a-f-]{36}$/.test(u);
    const r = await api.post("/restore", { snapshot: snapshotId, safetySnapshot: false });
    expect(stopped).toBe(3);
    expectError(r, 503, "chroma_unavailable", /unreachable/);

    await startChroma();
    // Chroma cannot swap two collections atomically: the old one is gone, the new one is
    // whole under its aside name. Either way nothing is half restored.
    const now = await names();
    const aside = now.filter(isAsideCollection);
    expect(now).not.toContain("first");
    expect(live.size).not.toBe(atSnapshot.first!.size);
    expect(aside).toHaveLength(1);
    expectSameRecords(atSnapshot.first!, await dump(aside[0]!), false);

    const rerun = await api.post("/restore", { snapshot: snapshotId, safetySnapshot: false });
    expect(rerun.status, rerun.text).toBe(200);
    expectSameRecords(atSnapshot.first!, await dump("first"), false);
    expectSameRecords(atSnapshot.second!, await dump("second"), false);
    expect(await names()).toEqual(["first", "second"]);
  });
});
