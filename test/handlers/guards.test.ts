/**
 * The guards that keep a bad day from erasing good history, through the HTTP app against
 * a real Chroma: automatic backups held (`409 restore_pending`) while the startup restore
 * has not succeeded, the drop warning and the snapshot kept from before the drop, the
 * unchanged skip (and `force`), and `ifEmpty` meaning "no collection holds a record".
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { createApp } from "../../handlers/app.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { RestorePendingError } from "../../lib/errors.js";
import type { LogLevel } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, deleteRecords, describeCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { client, expectError, makeStore, ndjsonLines, resetChroma, TOKEN, type Client, type CollectionSpec, type Driver } from "./harness.js";

const ALPHA: CollectionSpec = { name: "alpha", count: 120, dim: 8, seed: 31 };
const BETA: CollectionSpec = { name: "beta", count: 40, dim: 8, seed: 32, configurationJson: '{"hnsw":{"space":"ip"}}', metadataJson: '{"owner":"snapshot"}' };

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

interface Logged {
  level: LogLevel;
  message: string;
  fields: Record<string, unknown>;
}

async function fresh(driver: Driver = "memory", keepLast = 24) {
  const store = await makeStore(driver);
  onTestFinished(() => store.cleanup());
  const logs: Logged[] = [];
  const log = (level: LogLevel, message: string, fields: Record<string, unknown> = {}) => void logs.push({ level, message, fields });
  const service = new BackupService({
    chroma: new ChromaRest({ url: chroma.url }),
    storage: store.storage,
    storagePrefix: "chromadb/",
    retention: { keepLast, keepSafety: 3, keepBeforeDrop: 30 * 86400 },
    log,
  });
  const api = client(createApp({ service, token: TOKEN, version: "test", log }));
  return { store, service, api, logs };
}

async function ids(api: Client, query = ""): Promise<string[]> {
  return ((await api.get(`/backups${query}`)).body.snapshots as { id: string }[]).map((s) => s.id);
}

async function storedKeys(store: { storage: { list(prefix: string): AsyncIterable<{ key: string; size?: number }> } }): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of store.storage.list("")) keys.push(`${info.key}:${info.size}`);
  return keys.sort();
}

describe("restore_pending: automatic backups are held until the startup restore succeeded", () => {
  it("refuses ifOlderThan and service automatic backups while running or failed, at error level; a plain POST /backups goes ahead", async () => {
    const { service, api, logs } = await fresh();
    expect(service.startupRestore).toMatchObject({ state: "none", attempts: 0 });
    expect((await api.post("/backups", { ifOlderThan: "1s" })).status).toBe(201);

    service.markStartupRestore("running");
    const running = await api.post("/backups", { ifOlderThan: "0s" });
    expectError(running, 409, "restore_pending", /startup restore has not succeeded.*still running \(attempt 1/s);
    expect(running.body.error.details).toMatchObject({ startupRestore: "running", attempts: 1 });

    service.markStartupRestore("failed", new Error("storage (s3) failed: connect ECONNREFUSED 127.0.0.1:9000"));
    expect(service.startupRestore).toMatchObject({ state: "failed", attempts: 1, lastError: expect.stringMatching(/ECONNREFUSED/) });
    logs.length = 0;
    const failed = await api.post("/backups", { ifOlderThan: "1h" });
    expectError(failed, 409, "restore_pending", /failed \(attempt 1, at .*ECONNREFUSED.*\) and is being retried/);
    // It says how to proceed.
    expect(failed.body.error.message).toMatch(/Wait for the restore to succeed, fix the store.*plain POST \/backups/);
    expect(logs.some((l) => l.level === "error" && /automatic backup refused/.test(l.message))).toBe(true);
    // Streamed, the refusal is the error line.
    const streamed = ndjsonLines(await api.post("/backups", { ifOlderThan: "1h" }, { headers: { accept: "application/x-ndjson" } }));
    expect(streamed.at(-1)).toMatchObject({ event: "error", status: 409, error: { code: "restore_pending" } });
    await expect(service.backup({ automatic: true })).rejects.toBeInstanceOf(RestorePendingError);
    await expect(service.backup({ automatic: true, force: true })).rejects.toBeInstanceOf(RestorePendingError);
    expect(await ids(api)).toHaveLength(1);

    // The operator's plain backup is taken.
    await addRecords(chroma.url, await collectionId(chroma.url, "alpha"), makeRecords(1, 8, 1, "operator"));
    expect((await api.post("/backups")).status).toBe(201);
    expect(await ids(api)).toHaveLength(2);

    // A second attempt counts; success (or an operator's override) releases the hold.
    service.markStartupRestore("running");
    expect(service.startupRestore.attempts).toBe(2);
    service.markStartupRestore("done");
    expect(service.startupRestore).toMatchObject({ state: "done", attempts: 2 });
    expect((await api.post("/backups", { ifOlderThan: "0s" })).status).toBe(200); // unchanged: skipped, not refused
    service.markStartupRestore("overridden", "operator opened the gate");
    expect(logs.some((l) => l.level === "warn" && /overridden/.test(l.message))).toBe(true);
    expect((await service.backup({ automatic: true, force: true })).skipped).toBe(false);
  });

  it("the issue's scenario: a 2,000-record snapshot, then four 1-record ones with keepLast 3: the first is kept, the drop is warned about", async () => {
    const { service, api, logs } = await fresh("fs", 3);
    await resetChroma(chroma.url, [{ name: "docs", count: 2000, dim: 8, seed: 41 }]);
    const good = await api.post("/backups");
    expect(good.status).toBe(201);
    expect(good.body.warnings).toEqual([]);

    // The startup restore cannot read the store; the app writes one record into an empty Chroma.
    service.markStartupRestore("failed", new Error("storage (fs) failed: EACCES"));
    await resetChroma(chroma.url, [{ name: "docs", count: 1, dim: 8, seed: 42 }]);
    expectError(await api.post("/backups", { ifOlderThan: "1s" }), 409, "restore_pending");
    expect(await ids(api)).toEqual([good.body.id]);

    // Plain backups (an operator's decision) are taken, with the drop in the first answer.
    const small: string[] = [];
    const answers = [];
    for (let i = 0; i < 4; i++) {
      if (i > 0) {
        const docs = await collectionId(chroma.url, "docs");
        await deleteRecords(chroma.url, docs, [`docs-${i - 1}`]);
        await addRecords(chroma.url, docs, makeRecords(1, 8, 50 + i, "docs").map((r) => ({ ...r, id: `docs-${i}` })));
      }
      const r = await api.post("/backups");
      expect(r.status, r.text).toBe(201);
      expect(r.body.records).toBe(1);
      small.push(r.body.id);
      answers.push(r.body);
      if (i === 0) {
        const status = await api.get("/status");
        expect(status.body.lastBackup).toMatchObject({ id: r.body.id, warnings: [expect.stringMatching(/^data drop:/)] });
      }
    }
    expect(answers[0].warnings).toEqual([expect.stringMatching(new RegExp(`^data drop: this snapshot holds 1 records in 1 collection\\(s\\), against 2000 in 1 .*${good.body.id}.*POST /restore`))]);
    for (const a of answers.slice(1)) expect(a.warnings).toEqual([]); // no drop from the 1-record one before
    expect(logs.filter((l) => l.level === "warn" && l.message.startsWith("data drop:")).map((l) => l.fields.snapshot)).toEqual([small[0]]);

    // keepLast 3 forgot the oldest 1-record snapshot, never the 2,000-record one.
    expect(await ids(api)).toEqual([small[3], small[2], small[1], good.body.id]);
    expect(answers.flatMap((a) => a.retention.deleted)).toEqual([small[0]]);
    const preview = await api.post("/prune", { dryRun: true });
    expect(preview.body.kept).toContain(good.body.id);
    expect((await api.post(`/backups/${good.body.id}/verify`)).body).toMatchObject({ ok: true, records: 2000 });
  });
});

describe("unchanged data commits no snapshot", () => {
  it("answers 200 unchanged with the snapshot it equals, writes nothing to the store; force commits one", async () => {
    const { store, api } = await fresh();
    const first = await api.post("/backups");
    expect(first.status).toBe(201);
    const before = await storedKeys(store);

    const again = await api.post("/backups");
    expect(again.status, again.text).toBe(200);
    expect(again.body).toEqual({ skipped: true, reason: "unchanged", latest: expect.objectContaining({ id: first.body.id, records: 160 }), message: expect.stringMatching(/force/) });
    const streamed = ndjsonLines(await api.post("/backups", {}, { headers: { accept: "application/x-ndjson" } }));
    expect(streamed.at(-1)).toMatchObject({ event: "done", skipped: true, reason: "unchanged", latest: { id: first.body.id } });
    expect(await storedKeys(store)).toEqual(before); // no manifest, no chunk, no sidecar

    const forced = await api.post("/backups", { force: true });
    expect(forced.status).toBe(201);
    expect(forced.body).toMatchObject({ skipped: false, records: 160, bytes: first.body.bytes });
    expectError(await api.post("/backups", { force: "yes" }), 400, "invalid_request", /force is true or false/);
    expect(await ids(api)).toEqual([forced.body.id, first.body.id]);

    // Any change is a backup: a record, a collection's metadata, a new empty collection.
    await deleteRecords(chroma.url, await collectionId(chroma.url, "beta"), ["beta-3"]);
    expect((await api.post("/backups")).status).toBe(201);
    await rest.deleteCollection("beta");
    await createCollection(chroma.url, "beta", BETA.configurationJson!, '{"owner":"someone else"}');
    await addRecords(chroma.url, await collectionId(chroma.url, "beta"), makeRecords(BETA.count, BETA.dim, BETA.seed, "beta"));
    expect((await api.post("/backups")).status).toBe(201);
    expect((await api.post("/backups")).status).toBe(200);
    await createCollection(chroma.url, "gamma", '{"hnsw":{"space":"l2"}}');
    expect((await api.post("/backups")).status).toBe(201);
    expect((await api.post("/backups")).status).toBe(200);
  });

  it("tags: a tagged backup skips only when the newest has its tag; a retried restore reuses its safety snapshot", async () => {
    const { api } = await fresh();
    const plain = (await api.post("/backups")).body;
    const nightly = await api.post("/backups", { tag: "nightly" });
    expect(nightly.status).toBe(201); // a different tag: asked for by name
    const nightlyAgain = await api.post("/backups", { tag: "nightly" });
    expect(nightlyAgain.body).toMatchObject({ skipped: true, reason: "unchanged", latest: { id: nightly.body.id, tag: "nightly" } });
    expect((await api.post("/backups")).body).toMatchObject({ skipped: true, reason: "unchanged", latest: { id: nightly.body.id } });
    expect(await ids(api)).toEqual([nightly.body.id, plain.id]);

    // Two restores of the same data over the same data: one safety snapshot, named by both.
    await deleteRecords(chroma.url, await collectionId(chroma.url, "alpha"), ["alpha-7"]);
    const r1 = await api.post("/restore", { snapshot: plain.id });
    const safety = r1.body.safetySnapshot as string;
    expect(safety).toEqual(expect.any(String));
    await deleteRecords(chroma.url, await collectionId(chroma.url, "alpha"), ["alpha-7"]); // the same change again
    const r2 = await api.post("/restore", { snapshot: plain.id });
    expect(r2.body).toMatchObject({ restored: true, safetySnapshot: safety });
    expect(await ids(api, "?tag=pre-restore")).toEqual([safety]);
    expect((await api.get(`/backups/${safety}`)).body).toMatchObject({ tag: "pre-restore", records: 159 });
  });
});

describe("ifEmpty means no collection holds a record", () => {
  it("restores over an app's empty collections (replacing those the snapshot has, leaving the others), and refuses once any holds a record", async () => {
    const { api } = await fresh();
    const snap = (await api.post("/backups")).body.id as string;
    for (const name of await listCollectionNames(chroma.url)) await rest.deleteCollection(name);
    // The app starts first and creates its collections, empty.
    await createCollection(chroma.url, "beta", '{"hnsw":{"space":"l2"}}', '{"owner":"app"}');
    await createCollection(chroma.url, "app-cache", '{"hnsw":{"space":"l2"}}');

    const dry = await api.post("/restore", { ifEmpty: true, dryRun: true });
    expect(dry.body).toMatchObject({ dryRun: true, plan: [{ name: "alpha", action: "create" }, { name: "beta", action: "replace" }] });
    const r = await api.post("/restore", { ifEmpty: true, fallbackToVerified: true });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toMatchObject({ restored: true, snapshot: snap, safetySnapshot: null, collections: [{ name: "alpha", records: ALPHA.count }, { name: "beta", records: BETA.count }] });
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "app-cache", "beta"]);
    expect(await rest.count(await collectionId(chroma.url, "beta"))).toBe(BETA.count);
    expect((await describeCollection(chroma.url, "beta"))!.metadata).toEqual({ owner: "snapshot" });
    expect(await rest.count(await collectionId(chroma.url, "app-cache"))).toBe(0);
    expect(await ids(api)).toEqual([snap]); // no safety snapshot of empty collections

    // Now a collection holds records: ifEmpty restores nothing.
    const again = await api.post("/restore", { ifEmpty: true });
    expect(again.body).toMatchObject({ restored: false, reason: expect.stringMatching(/already holds records \(collection (alpha has 120|beta has 40)\)/) });
    await addRecords(chroma.url, await collectionId(chroma.url, "app-cache"), makeRecords(1, 8, 3, "cache"));
    await rest.deleteCollection("alpha");
    await rest.deleteCollection("beta");
    expect((await api.post("/restore", { ifEmpty: true })).body).toMatchObject({ restored: false, reason: expect.stringMatching(/app-cache has 1/) });
  });
});
