/**
 * What the service does over time and under contention, through the HTTP app against a
 * real Chroma: the lock under concurrent backups, ifOlderThan and backupIfDue, retention
 * after each backup, prune (dry run, limit, chunk sweep), and every restore mode.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, deleteRecords, dumpCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump, type DumpedRecord } from "../snapshot/compare.js";
import { client, DRIVERS, makeApp, makeService, makeStore, resetChroma, type Client, type CollectionSpec, type Driver, type ServiceSetup, type Store } from "./harness.js";

const ALPHA: CollectionSpec = { name: "alpha", count: 300, dim: 8, seed: 21 };
const BETA: CollectionSpec = { name: "beta", count: 150, dim: 12, seed: 22 };
const HOUR = 3600_000;

let chroma: TestChroma;
let rest: ChromaRest;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
});

afterAll(async () => {
  await chroma?.close();
});

beforeEach(async () => {
  await resetChroma(chroma.url, [ALPHA, BETA]);
});

/** A clock the test moves: real time plus an offset. */
function clock() {
  let offset = 0;
  return {
    now: () => new Date(Date.now() + offset),
    advance(ms: number) {
      offset += ms;
    },
  };
}

interface Env {
  store: Store;
  api: Client;
  service: ReturnType<typeof makeService>;
}

async function fresh(driver: Driver = "memory", setup: Omit<ServiceSetup, "chromaUrl" | "storage"> = {}): Promise<Env> {
  const store = await makeStore(driver);
  onTestFinished(() => store.cleanup());
  const service = makeService({ chromaUrl: chroma.url, storage: store.storage, ...setup });
  return { store, service, api: client(makeApp(service)) };
}

async function ids(api: Client, query = ""): Promise<string[]> {
  const r = await api.get(`/backups${query}`);
  expect(r.status).toBe(200);
  return (r.body.snapshots as { id: string }[]).map((s) => s.id);
}

async function backup(api: Client, body: object = {}): Promise<string> {
  const r = await api.post("/backups", body);
  expect(r.status, r.text).toBe(201);
  return r.body.id as string;
}

async function records(name: string): Promise<Map<string, DumpedRecord>> {
  return parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, name)));
}

let touches = 0;
/** Changes Chroma's data: one new record in alpha. */
async function touch(): Promise<void> {
  await addRecords(chroma.url, await collectionId(chroma.url, "alpha"), makeRecords(1, 8, 700 + touches, `touch-${touches++}`));
}

async function count(name: string): Promise<number> {
  return rest.count(await collectionId(chroma.url, name));
}

describe.each(DRIVERS)("the lock over the %s store", (driver) => {
  it("two concurrent POST /backups: exactly one 201, one 409, one new snapshot (one instance, then two)", async () => {
    const { store, api } = await fresh(driver);
    const other = client(makeApp(makeService({ chromaUrl: chroma.url, storage: store.storage })));
    for (const [a, b] of [
      [api, api],
      [api, other],
      [other, api],
    ]) {
      const before = await ids(api);
      const replies = await Promise.all([a!.post("/backups", { force: true }), b!.post("/backups", { force: true })]);
      const statuses = replies.map((r) => r.status).sort();
      expect(statuses, replies.map((r) => r.text).join("\n")).toEqual([201, 409]);
      const won = replies.find((r) => r.status === 201)!;
      const lost = replies.find((r) => r.status === 409)!;
      expect(lost.body.error.code).toBe("conflict");
      expect(lost.body.error.details).toMatchObject({ holder: expect.stringMatching(/^chroma-backup-/), operation: "backup", expiresAt: expect.any(String) });
      const after = await ids(api);
      expect(after).toEqual([won.body.id, ...before]);
      expect((await api.get("/status")).body.lock).toBeNull();
    }
  });
});

describe("ifOlderThan and backupIfDue", () => {
  it("skips while the newest snapshot is younger, backs up once it is older (time moved by `now`)", async () => {
    const time = clock();
    const { api } = await fresh("memory", { now: time.now });
    const first = (await api.post("/backups")).body;

    for (const ifOlderThan of ["1h", 3600, "61m"]) {
      const r = await api.post("/backups", { ifOlderThan });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ skipped: true, reason: expect.stringMatching(/younger than 3\d{3}s/), latest: { id: first.id, createdAt: first.createdAt, tag: null, collections: 2, records: 450, bytes: first.bytes, newBytes: first.newBytes, durationMs: first.durationMs } });
    }
    expect(await ids(api)).toEqual([first.id]);

    // Due, but nothing changed: no snapshot.
    const unchanged = await api.post("/backups", { ifOlderThan: "0s" });
    expect(unchanged.status, unchanged.text).toBe(200);
    expect(unchanged.body).toMatchObject({ skipped: true, reason: "unchanged", latest: { id: first.id } });
    expect(await ids(api)).toEqual([first.id]);
    await touch();
    const zero = await api.post("/backups", { ifOlderThan: "0s" });
    expect(zero.status).toBe(201);
    expect(zero.body.skipped).toBe(false);
    expect(await ids(api)).toEqual([zero.body.id, first.id]);

    time.advance(2 * HOUR);
    await touch();
    const later = await api.post("/backups", { ifOlderThan: "1h" });
    expect(later.status).toBe(201);
    expect(Date.parse(later.body.createdAt) - Date.parse(first.createdAt)).toBeGreaterThan(2 * HOUR - 60_000);
    expect((await api.post("/backups", { ifOlderThan: "1h" })).body.skipped).toBe(true);
    // Streams the skip too.
    const streamed = await api.post("/backups", { ifOlderThan: "1h" }, { headers: { accept: "application/x-ndjson" } });
    expect(JSON.parse(streamed.text.trim().split("\n").at(-1)!)).toMatchObject({ event: "done", skipped: true, latest: { id: later.body.id } });

    // A pre-restore safety snapshot is not a backup: it does not make the next one skip.
    time.advance(2 * HOUR);
    const restore = await api.post("/restore", { collections: ["alpha"] });
    expect(restore.body.safetySnapshot).toEqual(expect.any(String));
    await touch();
    const after = await api.post("/backups", { ifOlderThan: "1h" });
    expect(after.status, after.text).toBe(201);
  });

  it("service.backupIfDue takes a backup only when the newest is older than the interval", async () => {
    const time = clock();
    const { service, api } = await fresh("memory", { now: time.now });
    const first = await service.backupIfDue(3600, { tag: "upload" });
    expect(first.skipped).toBe(false);
    if (first.skipped) return;
    expect(first.snapshot.tag).toBe("upload");
    const again = await service.backupIfDue(3600);
    expect(again).toMatchObject({ skipped: true, latest: { id: first.snapshot.id } });
    time.advance(30 * 60_000);
    expect((await service.backupIfDue(3600)).skipped).toBe(true);
    time.advance(31 * 60_000);
    await touch();
    const due = await service.backupIfDue(3600);
    expect(due.skipped).toBe(false);
    if (due.skipped) return;
    expect(await ids(api)).toEqual([due.snapshot.id, first.snapshot.id]);
  });

  it("service.backupIfDue() defaults to the configured BACKUP_MIN_INTERVAL", async () => {
    const time = clock();
    const { service } = await fresh("memory", { now: time.now, backupMinIntervalSeconds: 600 });
    expect((await service.backupIfDue()).skipped).toBe(false);
    time.advance(5 * 60_000);
    expect((await service.backupIfDue()).skipped).toBe(true);
    time.advance(6 * 60_000);
    expect(await service.backupIfDue()).toMatchObject({ skipped: true, reason: "unchanged" });
    await touch();
    expect((await service.backupIfDue()).skipped).toBe(false);
  });
});

describe("retention and prune", () => {
  it("retention runs after each backup: keepLast 3, five backups, the three newest remain", async () => {
    const { api } = await fresh("fs", { keepLast: 3 });
    const made: string[] = [];
    const forgotten: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await api.post("/backups", { force: true });
      expect(r.status).toBe(201);
      made.push(r.body.id);
      forgotten.push(...r.body.retention.deleted);
    }
    expect(await ids(api)).toEqual(made.slice(2).reverse());
    expect(forgotten).toEqual(made.slice(0, 2));
    for (const id of made.slice(2)) expect((await api.post(`/backups/${id}/verify`)).body).toMatchObject({ ok: true, records: 450 });
    expect((await api.get("/status")).body.storage.snapshots).toBe(3);
  });

  /** Snapshots at `hoursApart` intervals, each with its own short-lived collection, so each has chunks of its own. */
  async function spreadSnapshots(api: Client, time: ReturnType<typeof clock>, tags: (string | null)[], hoursApart: number): Promise<string[]> {
    const made: string[] = [];
    for (const [i, tag] of tags.entries()) {
      if (i > 0) await rest.deleteCollection(`tmp-${i - 1}`);
      const id = await createCollection(chroma.url, `tmp-${i}`, '{"hnsw":{"space":"l2"}}');
      await addRecords(chroma.url, id, makeRecords(60, 8, 100 + i, `tmp-${i}`));
      made.push(await backup(api, tag ? { tag } : {}));
      time.advance(hoursApart * HOUR);
    }
    return made;
  }

  it("POST /prune with dryRun reports exactly what the real prune then does", async () => {
    const time = clock();
    const { api } = await fresh("fs", { now: time.now });
    const tags = [null, "release", null, null, "nightly", null, "release", null, null, null];
    const made = await spreadSnapshots(api, time, tags, 7);
    const rules = { keepLast: 2, keepDaily: 2, keepTags: ["release"], grace: 0 };
    const dry = await api.post("/prune", { ...rules, dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body.dryRun).toBe(true);
    expect(dry.body.deleted.length).toBeGreaterThan(0);
    expect(dry.body.chunksDeleted).toBeGreaterThan(0);
    expect(dry.body.bytesFreed).toBeGreaterThan(0);
    expect(await ids(api)).toEqual([...made].reverse()); // the dry run deleted nothing
    // Every release is kept; the kept and deleted sets partition what there was.
    for (const [i, tag] of tags.entries()) if (tag === "release") expect(dry.body.kept).toContain(made[i]);
    expect([...dry.body.kept, ...dry.body.deleted].sort()).toEqual([...made].sort());

    const statusBefore = (await api.get("/status")).body.storage;
    const real = await api.post("/prune", rules);
    expect(real.status).toBe(200);
    const { dryRun: _d, ...dryChoice } = dry.body;
    const { dryRun: realDry, ...realChoice } = real.body;
    expect(realDry).toBe(false);
    expect(realChoice).toEqual(dryChoice);
    expect(await ids(api)).toEqual(dry.body.kept);
    const statusAfter = (await api.get("/status")).body.storage;
    // Chunks and digests freed, and the deleted snapshots' manifests on top.
    expect(statusAfter.storedBytes).toBeLessThan(statusBefore.storedBytes - real.body.bytesFreed);
    expect(statusAfter.chunks).toBe(statusBefore.chunks - real.body.chunksDeleted);
    for (const id of dry.body.kept) expect((await api.post(`/backups/${id}/verify`)).body.ok).toBe(true);
    // Pruning again with the same rules finds nothing more to do.
    expect((await api.post("/prune", rules)).body).toMatchObject({ kept: dry.body.kept, deleted: [], chunksDeleted: 0, bytesFreed: 0, remaining: 0 });
  });

  it("POST /prune with limit deletes the oldest first and leaves `remaining` for the next call, which finishes", async () => {
    const time = clock();
    const { api } = await fresh("memory", { now: time.now });
    const made = await spreadSnapshots(api, time, [null, null, null, null, null], 1);
    const first = await api.post("/prune", { keepLast: 1, limit: 3, grace: 0 });
    expect(first.body).toMatchObject({ dryRun: false, kept: [made[4]], deleted: made.slice(0, 3), remaining: 1 });
    expect(first.body.chunksDeleted).toBeGreaterThan(0);
    expect(await ids(api)).toEqual([made[4], made[3]]);
    // The chunks of the snapshot the limit left are still there.
    expect((await api.post(`/backups/${made[3]}/verify`)).body.ok).toBe(true);
    const second = await api.post("/prune", { keepLast: 1, limit: 3, grace: 0 });
    expect(second.body).toMatchObject({ kept: [made[4]], deleted: [made[3]], remaining: 0 });
    expect(second.body.chunksDeleted).toBeGreaterThan(0);
    expect(await ids(api)).toEqual([made[4]]);
    expect((await api.post("/prune", { keepLast: 1, limit: 3, grace: 0 })).body).toMatchObject({ deleted: [], remaining: 0, chunksDeleted: 0 });
    expect((await api.post(`/backups/${made[4]}/verify`)).body.ok).toBe(true);
  });

  it.each(DRIVERS)("the chunk sweep (grace 0) frees what no snapshot references; every kept snapshot still verifies (%s)", async (driver) => {
    const { api } = await fresh(driver);
    const extra = await createCollection(chroma.url, "sweep-me", '{"hnsw":{"space":"ip"}}');
    await addRecords(chroma.url, extra, makeRecords(250, 16, 77, "sweep-me"));
    const withExtra = await backup(api);
    await rest.deleteCollection("sweep-me");
    const without = await backup(api);
    // Another snapshot shares alpha and beta's chunks: deleting it frees nothing of theirs.
    const deleted = await api.del(`/backups/${withExtra}`);
    expect(deleted.body).toEqual({ deleted: withExtra });

    const before = (await api.get("/status")).body.storage;
    // A dry run (no lock: a backup may still be writing) leaves young chunks alone by
    // default; a real run holds the lock, so no backup is writing, and frees them at any age.
    expect((await api.post("/prune", { dryRun: true })).body).toMatchObject({ deleted: [], chunksDeleted: 0, bytesFreed: 0 });
    expect((await api.post("/prune", { dryRun: true, grace: 0 })).body.chunksDeleted).toBeGreaterThan(0);
    const swept = await api.post("/prune", {});
    expect(swept.status).toBe(200);
    expect(swept.body.chunksDeleted).toBeGreaterThan(0);
    expect(swept.body.bytesFreed).toBeGreaterThan(0);
    const after = (await api.get("/status")).body.storage;
    expect(after.storedBytes).toBeLessThan(before.storedBytes);
    expect(after.storedBytes).toBe(before.storedBytes - swept.body.bytesFreed);
    expect(after.chunks).toBe(before.chunks - swept.body.chunksDeleted);
    expect(await ids(api)).toEqual([without]);
    expect((await api.post(`/backups/${without}/verify`)).body).toMatchObject({ ok: true, records: 450, errors: [] });
    // And it restores.
    const restored = await api.post("/restore", { snapshot: without, collections: ["beta"], rename: { beta: "beta-swept" } });
    expect(restored.body.collections).toEqual([{ name: "beta-swept", records: BETA.count }]);
    expect(await count("beta-swept")).toBe(BETA.count);
  });
});

describe("restore", () => {
  it("replace takes a pre-restore safety snapshot first, restores exactly, and the safety snapshot restores what was replaced", async () => {
    const { api } = await fresh("fs");
    const original = { alpha: await records("alpha"), beta: await records("beta") };
    const snap = await backup(api);
    await addRecords(chroma.url, await collectionId(chroma.url, "alpha"), makeRecords(40, 8, 901, "alpha-late"));
    await deleteRecords(chroma.url, await collectionId(chroma.url, "beta"), ["beta-0", "beta-1", "beta-2"]);
    const changed = { alpha: await records("alpha"), beta: await records("beta") };

    const r = await api.post("/restore", {});
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({
      restored: true,
      snapshot: snap,
      collections: [
        { name: "alpha", records: ALPHA.count },
        { name: "beta", records: BETA.count },
      ],
      safetySnapshot: expect.any(String),
      durationMs: expect.any(Number),
    });
    const safety = r.body.safetySnapshot as string;
    expectSameRecords(original.alpha, await records("alpha"), false);
    expectSameRecords(original.beta, await records("beta"), false);
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);

    expect(await ids(api, "?tag=pre-restore")).toEqual([safety]);
    const described = (await api.get(`/backups/${safety}`)).body;
    expect(described).toMatchObject({ tag: "pre-restore", records: ALPHA.count + 40 + BETA.count - 3, collections: expect.any(Array) });
    // "latest" still means the newest real backup, not the safety snapshot.
    expect((await api.get("/backups/latest")).body.id).toBe(snap);
    expect((await api.get("/status")).body.lastBackup.id).toBe(snap);

    // Undo the restore from the safety snapshot.
    const undo = await api.post("/restore", { snapshot: safety, safetySnapshot: false });
    expect(undo.body).toMatchObject({ restored: true, snapshot: safety, safetySnapshot: null });
    expectSameRecords(changed.alpha, await records("alpha"), false);
    expectSameRecords(changed.beta, await records("beta"), false);
  });

  it("safetySnapshot: false takes none", async () => {
    const { api } = await fresh();
    const snap = await backup(api);
    await deleteRecords(chroma.url, await collectionId(chroma.url, "alpha"), ["alpha-5"]);
    const r = await api.post("/restore", { safetySnapshot: false });
    expect(r.body).toMatchObject({ restored: true, snapshot: snap, safetySnapshot: null });
    expect(await ids(api)).toEqual([snap]);
    expect(await count("alpha")).toBe(ALPHA.count);
  });

  it("ifEmpty with data present restores nothing and changes nothing; into an empty Chroma it restores", async () => {
    const { api } = await fresh();
    const snap = await backup(api);
    await deleteRecords(chroma.url, await collectionId(chroma.url, "alpha"), ["alpha-1", "alpha-2"]);
    const before = await records("alpha");
    const r = await api.post("/restore", { ifEmpty: true });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ restored: false, reason: expect.stringMatching(/already holds records \(collection (alpha has 298|beta has 150)\)/), snapshot: snap });
    expectSameRecords(before, await records("alpha"), false);
    expect(await ids(api)).toEqual([snap]);

    for (const name of await listCollectionNames(chroma.url)) await rest.deleteCollection(name);
    const empty = await api.post("/restore", { ifEmpty: true });
    expect(empty.body).toMatchObject({ restored: true, snapshot: snap, safetySnapshot: null });
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);
    expect(await count("alpha")).toBe(ALPHA.count);
    expect(await count("beta")).toBe(BETA.count);
  });

  it("dryRun reports the plan and changes nothing", async () => {
    const { api } = await fresh();
    const snap = await backup(api);
    await deleteRecords(chroma.url, await collectionId(chroma.url, "beta"), ["beta-9"]);
    const before = { alpha: await records("alpha"), beta: await records("beta") };
    const r = await api.post("/restore", { dryRun: true, rename: { alpha: "alpha-new" } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      restored: false,
      dryRun: true,
      snapshot: snap,
      plan: [
        { name: "alpha-new", from: "alpha", records: ALPHA.count, action: "create" },
        { name: "beta", from: "beta", records: BETA.count, action: "replace" },
      ],
    });
    expect((await api.post("/restore", { dryRun: true, mode: "merge", collections: ["beta"] })).body.plan).toEqual([{ name: "beta", from: "beta", records: BETA.count, action: "merge" }]);
    expectSameRecords(before.alpha, await records("alpha"), false);
    expectSameRecords(before.beta, await records("beta"), false);
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);
    expect(await ids(api)).toEqual([snap]); // no safety snapshot either
  });

  it("rename restores next to the original, which is left as it is", async () => {
    const { api } = await fresh();
    const original = await records("alpha");
    const snap = await backup(api);
    await deleteRecords(chroma.url, await collectionId(chroma.url, "alpha"), ["alpha-0", "alpha-10"]);
    const changed = await records("alpha");
    const r = await api.post("/restore", { collections: ["alpha"], rename: { alpha: "alpha-restored" } });
    expect(r.body).toMatchObject({ restored: true, snapshot: snap, collections: [{ name: "alpha-restored", records: ALPHA.count }], safetySnapshot: null });
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "alpha-restored", "beta"]);
    expectSameRecords(original, await records("alpha-restored"), false);
    expectSameRecords(changed, await records("alpha"), false);
    expect(await ids(api)).toEqual([snap]);
  });

  it("merge upserts the snapshot's records: deleted come back, changed take the snapshot's values, new ones stay", async () => {
    const { api } = await fresh();
    const original = await records("alpha");
    const snap = await backup(api);
    const id = await collectionId(chroma.url, "alpha");
    await deleteRecords(chroma.url, id, Array.from({ length: 30 }, (_, i) => `alpha-${i}`));
    await addRecords(chroma.url, id, makeRecords(10, 8, 555, "alpha").map((r, i) => ({ ...r, id: `alpha-${100 + i}` })), "upsert");
    await addRecords(chroma.url, id, makeRecords(25, 8, 556, "alpha-new"));
    const added = await records("alpha");
    expect(added.size).toBe(ALPHA.count - 30 + 25);

    const r = await api.post("/restore", { collections: ["alpha"], mode: "merge", safetySnapshot: false });
    expect(r.body).toMatchObject({ restored: true, snapshot: snap, collections: [{ name: "alpha", records: ALPHA.count }] });
    const merged = await records("alpha");
    expect(merged.size).toBe(ALPHA.count + 25);
    // Untouched and deleted records are exactly as in the snapshot.
    const untouched = (k: string) => !/^alpha-10\d$/.test(k);
    expectSameRecords(new Map([...original].filter(([k]) => untouched(k))), new Map([...merged].filter(([k]) => original.has(k) && untouched(k))), false);
    // Changed records are upserted: every value the snapshot holds wins. (Chroma's upsert
    // keeps what the snapshot leaves null, and metadata keys the snapshot does not have.)
    for (let i = 100; i < 110; i++) {
      const want = original.get(`alpha-${i}`)!;
      const got = merged.get(`alpha-${i}`)!;
      expect(added.get(`alpha-${i}`)!.embedding).not.toEqual(want.embedding); // it was changed
      expect(got.embedding.map(Math.fround)).toEqual(want.embedding.map(Math.fround));
      if (want.document !== null) expect(got.document).toBe(want.document);
      if (want.uri !== null) expect(got.uri).toBe(want.uri);
      expect(JSON.parse(got.metadata)).toMatchObject(JSON.parse(want.metadata) ?? {});
    }
    // Records the snapshot does not have are left alone.
    for (const [k, v] of added) if (k.startsWith("alpha-new-")) expect(merged.get(k)).toEqual(v);
  });

  it("pre-restore snapshots are kept to keepSafety, after restores and by POST /prune", async () => {
    const { store, api } = await fresh("memory", { keepSafety: 3 });
    await resetChroma(chroma.url, [{ name: "solo", count: 80, dim: 8, seed: 5 }]);
    const snap = await backup(api);
    const solo = () => collectionId(chroma.url, "solo");
    const safety: string[] = [];
    for (let i = 0; i < 5; i++) {
      // Each restore replaces data changed since the one before: five distinct safety snapshots.
      await addRecords(chroma.url, await solo(), makeRecords(1, 8, 60 + i, `changed-${i}`));
      const r = await api.post("/restore", {});
      expect(r.body.restored).toBe(true);
      safety.push(r.body.safetySnapshot);
    }
    expect(new Set(safety).size).toBe(5);
    expect(await ids(api, "?tag=pre-restore")).toEqual(safety.slice(2).reverse());
    expect(await ids(api)).toEqual([...safety.slice(2).reverse(), snap]);

    // Safety snapshots made outside the service's own retention are pruned to keepSafety too.
    const extra: string[] = [];
    for (let i = 0; i < 2; i++) extra.push((await takeSnapshot(rest, store.storage, { tag: "pre-restore" })).id);
    expect(await ids(api, "?tag=pre-restore")).toHaveLength(5);
    const pruned = await api.post("/prune", { keepLast: 1 });
    expect(pruned.body.deleted.sort()).toEqual(safety.slice(2, 4).sort());
    expect(pruned.body.kept.sort()).toEqual([snap, safety[4], ...extra].sort());
    expect(await ids(api, "?tag=pre-restore")).toEqual([...extra.reverse(), safety[4]]);
  });
});
