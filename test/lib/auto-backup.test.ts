/**
 * AutoBackup against a real Chroma and the memory store, with short intervals: idle
 * intervals cost no Chroma request, a change is backed up at the next one, an
 * `ifOlderThan` skip of changed data schedules a backup, and the on-stop backup protects
 * changes within its budget or is abandoned with nothing committed.
 *
 * The change signal is the test's own write counter, bumped with each write the test
 * makes (in the runtime it is the gate proxy's count of writes).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { createApp } from "../../handlers/app.js";
import { AutoBackup } from "../../lib/auto-backup.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { StoreLock } from "../../lib/lock.js";
import type { LogLevel } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, makeRecords } from "../fixtures/dataset.js";
import { client, resetChroma, TOKEN } from "../handlers/harness.js";

let chroma: TestChroma;

beforeAll(async () => {
  chroma = await startTestChroma();
});

afterAll(async () => {
  await chroma?.close();
});

beforeEach(async () => {
  await resetChroma(chroma.url, [{ name: "notes", count: 200, dim: 8, seed: 7 }]);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(options: { intervalSeconds?: number | null; signal?: boolean; onStopTimeoutSeconds?: number; storage?: Storage } = {}) {
  let writes = 0;
  const requests = { count: 0 };
  const storage = options.storage ?? memoryStorage();
  const logs: { level: LogLevel; message: string }[] = [];
  const log = (level: LogLevel, message: string) => void logs.push({ level, message });
  const service = new BackupService({
    chroma: new ChromaRest({ url: chroma.url, fetch: (input, init) => (requests.count++, fetch(input, init)) }),
    storage,
    storagePrefix: "chromadb/",
    retention: { keepLast: 24, keepSafety: 3 },
    log,
  });
  const auto = new AutoBackup({
    service,
    intervalSeconds: options.intervalSeconds === undefined ? 0.25 : options.intervalSeconds,
    changeSignal: options.signal === false ? undefined : () => writes,
    onStopTimeoutSeconds: options.onStopTimeoutSeconds ?? 20,
    log,
  });
  onTestFinished(() => auto.stop());
  const write = async (n = 1) => {
    await addRecords(chroma.url, await collectionId(chroma.url, "notes"), makeRecords(n, 8, 1000 + writes, `w${writes}`));
    writes++;
  };
  const snapshots = async () => (await service.list()).map((s) => s.id);
  return { service, auto, storage, requests, logs, write, snapshots };
}

describe("the interval", () => {
  it("with a change signal: an idle interval makes no Chroma request; a change is backed up at the next one", async () => {
    const { auto, requests, write, snapshots, service } = setup();
    expect(auto.unprotectedChanges()).toBe(true); // unknown at start
    auto.start();
    // Unknown at start: the first interval backs up.
    await vi.waitFor(async () => expect(await snapshots()).toHaveLength(1), { timeout: 10_000, interval: 50 });
    await vi.waitFor(() => expect(auto.unprotectedChanges()).toBe(false), { timeout: 5_000 });
    expect(auto.nextBackupAt()).toBeNull();

    requests.count = 0;
    await sleep(1500); // six intervals
    expect(requests.count).toBe(0);
    expect(await snapshots()).toHaveLength(1);

    await write(3);
    expect(auto.unprotectedChanges()).toBe(true);
    expect(auto.nextBackupAt()).toEqual(expect.any(Date));
    await vi.waitFor(async () => expect(await snapshots()).toHaveLength(2), { timeout: 10_000, interval: 50 });
    expect((await service.get("latest")).records).toBe(203);
    await vi.waitFor(() => expect(auto.unprotectedChanges()).toBe(false), { timeout: 5_000 });
  });

  it("without a change signal, every interval reads Chroma and unchanged data commits nothing", async () => {
    const { auto, service, requests, snapshots } = setup({ signal: false });
    await service.backup();
    auto.start();
    requests.count = 0;
    await vi.waitFor(() => expect(requests.count).toBeGreaterThan(10), { timeout: 10_000, interval: 50 });
    await sleep(600);
    expect(await snapshots()).toHaveLength(1);
    expect(auto.unprotectedChanges()).toBe(true); // cannot be known
  });

  it("a plain backup protects the data too: the interval then finds nothing to do", async () => {
    const { auto, service, requests, write, snapshots } = setup({ intervalSeconds: 0.3 });
    auto.start();
    await write();
    await service.backup();
    expect(auto.unprotectedChanges()).toBe(false);
    requests.count = 0;
    await sleep(1000);
    expect(requests.count).toBe(0);
    expect(await snapshots()).toHaveLength(1);
  });

  it("held while the startup restore has not succeeded; logged at error level by the service", async () => {
    const { auto, service, logs, write, snapshots } = setup();
    service.markStartupRestore("failed", new Error("store down"));
    await write();
    auto.start();
    await vi.waitFor(() => expect(logs.some((l) => l.level === "error" && /automatic backup refused/.test(l.message))).toBe(true), { timeout: 10_000 });
    expect(await snapshots()).toEqual([]);
    service.markStartupRestore("done");
    await vi.waitFor(async () => expect(await snapshots()).toHaveLength(1), { timeout: 10_000, interval: 50 });
  });
});

describe("scheduled backups", () => {
  it("an ifOlderThan call that skips changed data schedules one for when the interval is up; without a change, none", async () => {
    const { auto, service, write, snapshots } = setup({ intervalSeconds: null });
    auto.start();
    const api = client(createApp({ service, token: TOKEN, version: "test", log: () => {} }));
    const first = await api.post("/backups");
    expect(first.status).toBe(201);

    const idle = await api.post("/backups", { ifOlderThan: "1h" });
    expect(idle.body).toMatchObject({ skipped: true });
    expect(idle.body.scheduledAt).toBeUndefined();

    await write(2);
    const skipped = await api.post("/backups", { ifOlderThan: "2s" });
    expect(skipped.status).toBe(200);
    expect(skipped.body).toMatchObject({ skipped: true, reason: expect.stringMatching(/younger than 2s/) });
    expect(skipped.body.scheduledAt).toBe(new Date(Date.parse(first.body.createdAt) + 2000).toISOString());
    expect(auto.nextBackupAt()?.toISOString()).toBe(skipped.body.scheduledAt);
    await vi.waitFor(async () => expect(await snapshots()).toHaveLength(2), { timeout: 15_000, interval: 100 });
    expect((await service.get("latest")).records).toBe(202);
    expect(auto.nextBackupAt()).toBeNull();

    // A runtime that cannot schedule answers the skip without scheduledAt.
    auto.stop();
    await write();
    expect((await api.post("/backups", { ifOlderThan: "1h" })).body.scheduledAt).toBeUndefined();
  });

  it("schedules coalesce: with the interval, and with an earlier one-shot", () => {
    const { auto } = setup({ intervalSeconds: 3600 });
    auto.start();
    const tick = auto.schedule(new Date(Date.now() + 7200_000));
    expect(tick.getTime()).toBeLessThanOrEqual(Date.now() + 3600_000);
    expect(tick.getTime()).toBeGreaterThan(Date.now() + 3500_000);
    const soon = new Date(Date.now() + 600_000);
    expect(auto.schedule(soon)).toEqual(soon);
    expect(auto.schedule(new Date(Date.now() + 1200_000))).toEqual(soon);
    const sooner = new Date(Date.now() + 300_000);
    expect(auto.schedule(sooner)).toEqual(sooner);
  });
});

/** A memory store whose puts under `prefix` wait until `release()`; `held()`: one is waiting (or has). */
function gatedPuts(prefix: string): { inner: Storage; slow: Storage; release: () => void; held: () => boolean } {
  const inner = memoryStorage();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let held = false;
  const slow: Storage = {
    driver: inner.driver,
    capabilities: inner.capabilities,
    put: async (key, body) => {
      if (key.startsWith(prefix)) {
        held = true;
        await gate;
      }
      return inner.put(key, body);
    },
    putIfAbsent: (key, body) => inner.putIfAbsent(key, body),
    get: (key) => inner.get(key),
    head: (key) => inner.head(key),
    list: (prefix) => inner.list(prefix),
    delete: (key) => inner.delete(key),
  };
  return { inner, slow, release, held: () => held };
}

describe("the on-stop backup", () => {
  it("protects changes made right before the stop; with none, it asks nothing of Chroma", async () => {
    const { auto, service, write, snapshots } = setup({ intervalSeconds: 3600 });
    auto.start();
    await service.backup();
    await write(5);
    const result = await auto.backupOnStop();
    expect(result).toMatchObject({ outcome: "committed" });
    expect((await service.get("latest")).records).toBe(205);

    const { auto: idle, service: idleService, requests: idleRequests } = setup({ intervalSeconds: 3600 });
    idle.start();
    await idleService.backup();
    idleRequests.count = 0;
    expect(await idle.backupOnStop()).toEqual({ outcome: "nothing-to-protect" });
    expect(idleRequests.count).toBe(0);
    expect(await snapshots()).toHaveLength(2);
  });

  it("BACKUP_ON_STOP_TIMEOUT=0 disables it; a held service refuses it", async () => {
    const off = setup({ onStopTimeoutSeconds: 0 });
    off.auto.start();
    await off.write();
    expect(await off.auto.backupOnStop()).toEqual({ outcome: "disabled" });
    expect(off.logs.some((l) => l.level === "warn" && /BACKUP_ON_STOP_TIMEOUT=0/.test(l.message))).toBe(true);

    const held = setup();
    held.auto.start();
    held.service.markStartupRestore("failed", "store down");
    await held.write();
    expect(await held.auto.backupOnStop()).toMatchObject({ outcome: "held", error: expect.stringMatching(/startup restore/) });
    expect(await held.snapshots()).toEqual([]);
  });

  it("out of time: abandoned before its commit, nothing partial is left visible, the lock is let go", async () => {
    // A store whose chunk uploads wait until the test lets them through (a slow store).
    const { inner, slow, release } = gatedPuts("chunks/");
    const { auto, service, write, snapshots, logs } = setup({ storage: slow, onStopTimeoutSeconds: 0.5, intervalSeconds: 3600 });
    auto.start();
    await write(50);
    const result = await auto.backupOnStop();
    expect(result).toMatchObject({ outcome: "timeout" });
    expect(logs.some((l) => l.level === "error" && /on-stop backup ran out of BACKUP_ON_STOP_TIMEOUT \(0.5s\).*nothing partial/.test(l.message))).toBe(true);

    release();
    // The abandoned backup unwinds: it never commits, and lets go of the lock.
    const lock = new StoreLock(inner, "maintenance");
    await vi.waitFor(async () => expect(await lock.current()).toBeNull(), { timeout: 10_000, interval: 50 });
    expect(await snapshots()).toEqual([]);
    expect((await service.backup()).skipped).toBe(false);
  });

  it("out of time with its manifest write in flight: the commit lands, and the log and the answer say so", async () => {
    // A store whose manifest write waits until the test lets it through: the budget runs
    // out after the commit has begun, and the write then completes while the backup unwinds.
    const { slow, release, held } = gatedPuts("snapshots/");
    const { auto, write, snapshots, logs } = setup({ storage: slow, onStopTimeoutSeconds: 0.5, intervalSeconds: 3600 });
    auto.start();
    await write(50);
    const stopping = auto.backupOnStop();
    await vi.waitFor(() => expect(held()).toBe(true), { timeout: 10_000, interval: 10 });
    await new Promise((r) => setTimeout(r, 700)); // past the 0.5 s budget, within the unwind
    release();
    const result = await stopping;
    const [committed] = await snapshots();
    expect(committed).toBeDefined();
    expect(result).toEqual({ outcome: "committed", snapshot: committed });
    expect(logs.some((l) => /nothing partial was written/.test(l.message))).toBe(false);
    expect(logs.some((l) => l.level === "warn" && /on-stop backup ran out of BACKUP_ON_STOP_TIMEOUT \(0.5s\) as it committed/.test(l.message))).toBe(true);
  });
});
