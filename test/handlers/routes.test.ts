/**
 * Every route of the HTTP contract (/work/shared/API.md) through app.request, against a
 * real Chroma, once over the fs store and once over the memory store: answers, shapes,
 * and every error status the contract names.
 */
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { StoreLock } from "../../lib/lock.js";
import { readManifest } from "../../lib/snapshot/catalog.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import { StorageError } from "../../lib/storage/errors.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { parseDump } from "../snapshot/compare.js";
import { collectionId, dumpCollection, listCollectionNames } from "../fixtures/dataset.js";
import { client, DRIVERS, expectError, makeApp, makeService, makeStore, ndjsonLines, PROTECTED_ROUTES, resetChroma, TOKEN, UNKNOWN_ID, VERSION, type Client, type Driver, type Store } from "./harness.js";

const ALPHA = { name: "alpha", count: 300, dim: 8, seed: 11, metadataJson: '{"owner":"team-a","rev":2,"ratio":1.0}', configurationJson: '{"hnsw":{"space":"cosine","ef_search":120}}' };
const BETA = { name: "beta", count: 200, dim: 16, seed: 12 };
const RECORDS = ALPHA.count + BETA.count;
const SNAPSHOT_ID = /^\d{8}T\d{6}Z-[0-9a-f]{4}$/;

let chroma: TestChroma;

beforeAll(async () => {
  chroma = await startTestChroma();
  await resetChroma(chroma.url, [ALPHA, BETA]);
});

afterAll(async () => {
  await chroma?.close();
});

interface Env {
  store: Store;
  api: Client;
}

/** A fresh, empty store of this driver with the service and app over it; removed after the test. */
async function fresh(driver: Driver, options: { maxBodyBytes?: number; chromaUrl?: string } = {}): Promise<Env> {
  const store = await makeStore(driver);
  onTestFinished(() => store.cleanup());
  const service = makeService({ chromaUrl: options.chromaUrl ?? chroma.url, storage: store.storage, chromaTimeoutMs: 5000 });
  return { store, api: client(makeApp(service, { maxBodyBytes: options.maxBodyBytes })) };
}

function expectSummary(s: Record<string, unknown>): void {
  expect(s.id).toMatch(SNAPSHOT_ID);
  expect(typeof s.createdAt).toBe("string");
  expect(new Date(s.createdAt as string).toISOString()).toBe(s.createdAt);
  expect(s.tag === null || typeof s.tag === "string").toBe(true);
  for (const k of ["collections", "records", "bytes", "newBytes", "durationMs"]) {
    expect(Number.isInteger(s[k]), `${k} is an integer`).toBe(true);
    expect(s[k] as number).toBeGreaterThanOrEqual(0);
  }
}

/**
 * A digest of everything Chroma holds in a collection (ids, embeddings, documents, metadata,
 * uris), independent of the order Chroma lists records and metadata keys in.
 */
async function fingerprint(name: string): Promise<string> {
  const records = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, name)));
  const canonical = JSON.stringify([...records].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return createHash("sha256").update(canonical).digest("hex");
}

async function snapshotIds(api: Client): Promise<string[]> {
  const r = await api.get("/backups");
  expect(r.status).toBe(200);
  return (r.body.snapshots as { id: string }[]).map((s) => s.id);
}

/** Flips one byte of a stored chunk: on disk for fs, through the driver for memory. Returns the undo. */
async function corruptChunk(store: Store, hash: string): Promise<() => Promise<void>> {
  if (store.root) {
    const path = join(store.root, ...chunkKey(hash).split("/"));
    const good = await readFile(path);
    const bad = Buffer.from(good);
    bad[Math.floor(bad.length / 2)]! ^= 0x40;
    await writeFile(path, bad);
    return () => writeFile(path, good);
  }
  const good = await readAll(await store.storage.get(chunkKey(hash)));
  const bad = good.slice();
  bad[Math.floor(bad.length / 2)]! ^= 0x40;
  await store.storage.put(chunkKey(hash), bad);
  return () => store.storage.put(chunkKey(hash), good);
}

/** A store whose every operation fails as a down backend does. */
function unavailable(storage: Storage): Storage {
  const down = (operation: "put" | "putIfAbsent" | "get" | "head" | "list" | "delete") =>
    new StorageError(`${storage.driver}: connection refused`, { driver: storage.driver, operation, kind: "unavailable", retryable: true });
  return {
    driver: storage.driver,
    capabilities: storage.capabilities,
    put: async () => {
      throw down("put");
    },
    putIfAbsent: async () => {
      throw down("putIfAbsent");
    },
    get: async () => {
      throw down("get");
    },
    head: async () => {
      throw down("head");
    },
    // eslint-disable-next-line require-yield
    async *list() {
      throw down("list");
    },
    delete: async () => {
      throw down("delete");
    },
  };
}

describe.each(DRIVERS)("the HTTP contract over the %s store", (driver) => {
  it("GET /health needs no token and no Chroma or storage", async () => {
    const { api } = await fresh(driver);
    for (const auth of [false, true]) {
      const r = await api.get("/health", { auth });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ ok: true, version: VERSION });
    }
    // Still answers when both dependencies are down.
    const dead = `http://127.0.0.1:${await freePort()}`;
    const service = makeService({ chromaUrl: dead, storage: unavailable((await makeStore("memory")).storage) });
    const r = await client(makeApp(service)).get("/health", { auth: false });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ok: true, version: VERSION });
  });

  it("every other route answers 401 with WWW-Authenticate: Bearer to a missing, wrong or partial token", async () => {
    const { api } = await fresh(driver);
    const routes: [string, string][] = [...PROTECTED_ROUTES, ["GET", "/no-such-route"]];
    const wrong: [string | null, RegExp][] = [
      [null, /Authorization: Bearer/],
      ["Bearer nope", /wrong/],
      [`Bearer ${TOKEN.slice(0, -1)}`, /wrong/],
      [`Bearer ${TOKEN.slice(0, 8)}`, /wrong/],
      [`Bearer ${TOKEN}x`, /wrong/],
      [`Bearer ${TOKEN} extra`, /wrong/],
      [`Basic ${Buffer.from(`user:${TOKEN}`).toString("base64")}`, /wrong/],
      [TOKEN, /wrong/],
      ["Bearer ", /wrong/],
    ];
    for (const [method, path] of routes) {
      for (const [header, mentions] of wrong) {
        const r = await api.call(method, path, { auth: false, headers: header === null ? {} : { authorization: header } });
        expectError(r, 401, "unauthorized", mentions);
        expect(r.headers.get("www-authenticate"), `${method} ${path} with ${header}`).toMatch(/^Bearer\b/);
      }
    }
    // Nothing was done on the way: no snapshot, no restore.
    expect(await snapshotIds(api)).toEqual([]);
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);
    // The scheme is case-insensitive; the right token passes.
    expect((await api.get("/status", { auth: false, headers: { authorization: `bearer ${TOKEN}` } })).status).toBe(200);
  });

  it("an empty store: nothing listed, latest is 404, restore of latest is 'no snapshot', unknown ids are 404", async () => {
    const { api } = await fresh(driver);
    expect((await api.get("/backups")).body).toEqual({ snapshots: [] });
    expectError(await api.get("/backups/latest"), 404, "not_found", /no snapshot/);
    expectError(await api.post("/backups/latest/verify"), 404, "not_found", /no snapshot/);

    const restore = await api.post("/restore", {});
    expect(restore.status).toBe(200);
    expect(restore.body).toEqual({ restored: false, reason: "no snapshot" });
    expect((await api.post("/restore", { snapshot: "latest" })).body).toEqual({ restored: false, reason: "no snapshot" });
    expectError(await api.post("/restore", { snapshot: UNKNOWN_ID }), 404, "not_found", new RegExp(UNKNOWN_ID));

    expectError(await api.get(`/backups/${UNKNOWN_ID}`), 404, "not_found", new RegExp(UNKNOWN_ID));
    expectError(await api.del(`/backups/${UNKNOWN_ID}`), 404, "not_found", new RegExp(UNKNOWN_ID));
    expectError(await api.post(`/backups/${UNKNOWN_ID}/verify`), 404, "not_found", new RegExp(UNKNOWN_ID));
    expectError(await api.get("/no-such-route"), 404, "not_found", /no-such-route/);

    const status = await api.get("/status");
    expect(status.status).toBe(200);
    expect(status.body.lastBackup).toBeNull();
    expect(status.body.storage).toMatchObject({ driver, prefix: "chromadb/", snapshots: 0, chunks: 0, storedBytes: 0, logicalBytes: 0 });
  });

  it("POST /backups answers 201 with the Summary; /status, GET /backups/:id and /backups/latest describe it", async () => {
    const { api } = await fresh(driver);
    const first = await api.post("/backups");
    expect(first.status, first.text).toBe(201);
    expectSummary(first.body);
    expect(first.body).toMatchObject({ tag: null, collections: 2, records: RECORDS, skipped: false });
    expect(first.body.bytes).toBeGreaterThan(0);
    // The first snapshot wrote every chunk, its digests and its manifest.
    expect(first.body.newBytes).toBeGreaterThan(first.body.bytes);
    expect(Math.abs(Date.parse(first.body.createdAt) - Date.now())).toBeLessThan(60_000);

    const second = await api.post("/backups", { tag: "nightly" });
    expect(second.status, second.text).toBe(201);
    expect(second.body).toMatchObject({ tag: "nightly", collections: 2, records: RECORDS, bytes: first.body.bytes, skipped: false });
    // Nothing changed: only the manifest is new.
    expect(second.body.newBytes).toBeLessThan(first.body.newBytes / 4);

    const status = await api.get("/status");
    expect(status.status).toBe(200);
    const s = status.body;
    expect(s.chroma).toEqual({ url: chroma.url, reachable: true, version: expect.any(String), collections: 2, records: RECORDS });
    expect(s.storage).toMatchObject({ driver, prefix: "chromadb/", snapshots: 2 });
    expect(s.storage.chunks).toBeGreaterThan(0);
    expect(s.storage.storedBytes).toBeGreaterThan(0);
    expect(s.storage.logicalBytes).toBe(first.body.bytes + second.body.bytes);
    expect(s.storage.storedBytes).toBeLessThanOrEqual(s.storage.logicalBytes);
    // Each chunk once, plus the manifests and digests: what both snapshots added.
    expect(s.storage.storedBytes).toBe(first.body.newBytes + second.body.newBytes);
    expect(s.lastBackup).toEqual({ id: second.body.id, createdAt: second.body.createdAt, ageSeconds: expect.any(Number), warnings: [] });
    expect(s.lastBackup.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(s.lastBackup.ageSeconds).toBeLessThan(60);
    expect(Number.isInteger(s.lastBackup.ageSeconds)).toBe(true);
    expect(s.retention).toMatchObject({ keepLast: 24, keepSafety: 3 });
    expect(s.lock).toBeNull();

    const detail = await api.get(`/backups/${first.body.id}`);
    expect(detail.status).toBe(200);
    const { collections, ...summary } = detail.body;
    const { collections: count, skipped: _skipped, warnings: _warnings, retention: _retention, ...created } = first.body;
    expect(summary).toMatchObject(created);
    expect(count).toBe(2);
    expect(collections).toHaveLength(2);
    const alpha = collections.find((c: { name: string }) => c.name === "alpha");
    const beta = collections.find((c: { name: string }) => c.name === "beta");
    expect(alpha).toMatchObject({ name: "alpha", records: ALPHA.count, metadata: { owner: "team-a", rev: 2, ratio: 1 } });
    expect(alpha.configuration.hnsw).toMatchObject({ space: "cosine", ef_search: 120 });
    expect(beta).toMatchObject({ name: "beta", records: BETA.count, metadata: null });
    expect(beta.configuration.hnsw).toMatchObject({ space: "l2" });
    for (const c of collections) expect(c.bytes).toBeGreaterThan(0);
    expect(alpha.bytes + beta.bytes).toBe(first.body.bytes);

    const latest = await api.get("/backups/latest");
    expect(latest.status).toBe(200);
    expect(latest.body.id).toBe(second.body.id);
    expect(latest.body).toEqual((await api.get(`/backups/${second.body.id}`)).body);
  });

  it("GET /backups lists newest first and filters by tag and limit", async () => {
    const { api } = await fresh(driver);
    const made: { id: string; tag: string | null }[] = [];
    for (const tag of [undefined, "nightly", "release-1.0", "nightly", undefined]) {
      // Nothing changes between them: force commits each.
      const r = await api.post("/backups", { ...(tag ? { tag } : {}), force: true });
      expect(r.status, r.text).toBe(201);
      made.push({ id: r.body.id, tag: r.body.tag });
    }
    const all = await api.get("/backups");
    expect(all.status).toBe(200);
    const listed = all.body.snapshots as Record<string, unknown>[];
    expect(listed.map((s) => s.id)).toEqual(made.map((m) => m.id).reverse());
    for (const s of listed) expectSummary(s);
    const times = listed.map((s) => Date.parse(s.createdAt as string));
    expect(times).toEqual([...times].sort((a, b) => b - a));

    const nightly = await api.get("/backups?tag=nightly");
    expect(nightly.body.snapshots.map((s: { id: string }) => s.id)).toEqual(made.filter((m) => m.tag === "nightly").map((m) => m.id).reverse());
    expect((await api.get("/backups?tag=release-1.0")).body.snapshots.map((s: { id: string }) => s.id)).toEqual([made[2]!.id]);
    expect((await api.get("/backups?tag=none-such")).body.snapshots).toEqual([]);
    expect((await api.get("/backups?limit=2")).body.snapshots.map((s: { id: string }) => s.id)).toEqual([made[4]!.id, made[3]!.id]);
    expect((await api.get("/backups?limit=0")).body.snapshots).toEqual([]);
    expect((await api.get("/backups?tag=nightly&limit=1")).body.snapshots.map((s: { id: string }) => s.id)).toEqual([made[3]!.id]);
  });

  it("POST /backups and POST /restore stream NDJSON progress ending in done, or in error", async () => {
    const { api } = await fresh(driver);
    const ndjson = { headers: { accept: "application/x-ndjson" } };
    const backup = await api.post("/backups", { tag: "streamed" }, ndjson);
    expect(backup.status).toBe(200);
    const lines = ndjsonLines(backup);
    const done = lines.at(-1)!;
    expect(done).toMatchObject({ event: "done", tag: "streamed", collections: 2, records: RECORDS, skipped: false });
    expectSummary(done);
    const progress = lines.slice(0, -1);
    expect(progress.length).toBeGreaterThan(0);
    for (const p of progress) {
      expect(p).toEqual({ event: "progress", collection: expect.any(String), records: expect.any(Number), totalRecords: expect.any(Number), bytes: expect.any(Number) });
      expect(p.records as number).toBeLessThanOrEqual(p.totalRecords as number);
    }
    // Each collection reports its last page.
    expect(progress).toContainEqual(expect.objectContaining({ collection: "alpha", records: ALPHA.count, totalRecords: ALPHA.count }));
    expect(progress).toContainEqual(expect.objectContaining({ collection: "beta", records: BETA.count, totalRecords: BETA.count }));
    expect(await snapshotIds(api)).toEqual([done.id]);

    const restore = await api.post("/restore", { collections: ["beta"], rename: { beta: "beta-streamed" } }, ndjson);
    onTestFinished(() => new ChromaRest({ url: chroma.url }).deleteCollection("beta-streamed"));
    expect(restore.status).toBe(200);
    const rlines = ndjsonLines(restore);
    expect(rlines.at(-1)).toEqual({ event: "done", restored: true, snapshot: done.id, collections: [{ name: "beta-streamed", records: BETA.count }], safetySnapshot: null, durationMs: expect.any(Number) });
    const rprogress = rlines.slice(0, -1);
    expect(rprogress.length).toBeGreaterThan(0);
    for (const p of rprogress) expect(p).toMatchObject({ event: "progress", collection: "beta", totalRecords: BETA.count });
    expect(rprogress.at(-1)).toMatchObject({ records: BETA.count });
    expect(await new ChromaRest({ url: chroma.url }).count(await collectionId(chroma.url, "beta-streamed"))).toBe(BETA.count);

    // Errors once streaming: the last line is the error, in the API's error shape.
    const missing = ndjsonLines(await api.post("/backups", { collections: ["no-such-collection"] }, ndjson));
    expect(missing.at(-1)).toMatchObject({ event: "error", status: 400, error: { code: "invalid_request", message: expect.stringContaining("no-such-collection") } });
    const unknown = ndjsonLines(await api.post("/restore", { snapshot: UNKNOWN_ID }, ndjson));
    expect(unknown.at(-1)).toMatchObject({ event: "error", status: 404, error: { code: "not_found", message: expect.stringContaining(UNKNOWN_ID) } });
    expect(await snapshotIds(api)).toEqual([done.id]);
  });

  it("POST /restore restores (here under a new name) and answers the contract's shape", async () => {
    const { api } = await fresh(driver);
    const snap = (await api.post("/backups")).body;
    onTestFinished(() => new ChromaRest({ url: chroma.url }).deleteCollection("alpha-copy"));
    const r = await api.post("/restore", { collections: ["alpha"], rename: { alpha: "alpha-copy" } });
    expect(r.status, r.text).toBe(200);
    expect(r.body).toEqual({ restored: true, snapshot: snap.id, collections: [{ name: "alpha-copy", records: ALPHA.count }], safetySnapshot: null, durationMs: expect.any(Number) });
    expect(Number.isInteger(r.body.durationMs)).toBe(true);
    const copy = await dumpCollection(chroma.url, await collectionId(chroma.url, "alpha-copy"));
    expect(JSON.parse(copy).ids).toHaveLength(ALPHA.count);
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "alpha-copy", "beta"]);

    // Semantic errors about the request are 4xx, naming what is wrong.
    expectError(await api.post("/restore", { collections: ["gamma"] }), 404, "not_found", /gamma/);
    expectError(await api.post("/restore", { rename: { gamma: "gamma-2" } }), 400, "invalid_request", /gamma/);
    expectError(await api.post("/restore", { rename: { alpha: "same", beta: "same" } }), 400, "invalid_request", /same name/);
    expectError(await api.post("/backups", { collections: ["no-such-collection"] }), 400, "invalid_request", /no-such-collection/);
    expect(await snapshotIds(api)).toEqual([snap.id]);
  });

  it("DELETE /backups/:id answers {deleted} and the snapshot is gone", async () => {
    const { api } = await fresh(driver);
    const a = (await api.post("/backups")).body.id as string;
    const b = (await api.post("/backups", { force: true })).body.id as string;
    const r = await api.del(`/backups/${a}`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ deleted: a });
    expect(await snapshotIds(api)).toEqual([b]);
    expectError(await api.get(`/backups/${a}`), 404, "not_found", new RegExp(a));
    expectError(await api.del(`/backups/${a}`), 404, "not_found", new RegExp(a));
    expectError(await api.post(`/backups/${a}/verify`), 404, "not_found", new RegExp(a));
    expect((await api.post(`/backups/${b}/verify`)).body).toMatchObject({ ok: true, records: RECORDS, errors: [] });
  });

  it("POST /backups/:id/verify and POST /prune answer the contract's shapes", async () => {
    const { api } = await fresh(driver);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await api.post("/backups", { force: true })).body.id);
    const verify = await api.post(`/backups/${ids[0]}/verify`);
    expect(verify.status).toBe(200);
    expect(verify.body).toEqual({ ok: true, chunks: expect.any(Number), records: RECORDS, bytes: expect.any(Number), errors: [] });
    expect(verify.body.chunks).toBeGreaterThanOrEqual(2);
    expect(verify.body.bytes).toBe((await api.get(`/backups/${ids[0]}`)).body.bytes);
    expect((await api.post("/backups/latest/verify")).body).toEqual(verify.body);

    const dry = await api.post("/prune", { keepLast: 1, dryRun: true });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, kept: [ids[2]], deleted: [ids[0], ids[1]], chunksDeleted: 0, bytesFreed: 0, remaining: 0 });
    expect(await snapshotIds(api)).toEqual([...ids].reverse());
    const real = await api.post("/prune", { keepLast: 1 });
    expect(real.status).toBe(200);
    expect(real.body).toMatchObject({ dryRun: false, kept: [ids[2]], deleted: [ids[0], ids[1]], remaining: 0 });
    expect(await snapshotIds(api)).toEqual([ids[2]]);
    expect((await api.post(`/backups/${ids[2]}/verify`)).body.ok).toBe(true);
  });

  it("400 invalid_request for every kind of bad input, naming what is wrong, with no side effect", async () => {
    const { api } = await fresh(driver);
    const snap = (await api.post("/backups")).body.id as string;
    const before = await fingerprint("alpha");
    const json = (method: string, path: string, body: unknown, mentions: RegExp) => ({ method, path, body, headers: {}, mentions });
    const cases: { method: string; path: string; body: unknown; headers: Record<string, string>; mentions: RegExp }[] = [
      // bad body types
      json("POST", "/backups", { collections: "alpha" }, /collections/),
      json("POST", "/backups", { collections: [5] }, /collection name/),
      json("POST", "/backups", { tag: 7 }, /tag/),
      json("POST", "/backups", { ifOlderThan: true }, /ifOlderThan.*duration/),
      json("POST", "/restore", { ifEmpty: "yes" }, /ifEmpty/),
      json("POST", "/restore", { safetySnapshot: 1 }, /safetySnapshot/),
      json("POST", "/restore", { dryRun: "true" }, /dryRun/),
      json("POST", "/restore", { mode: "overwrite" }, /mode/),
      json("POST", "/restore", { rename: ["alpha"] }, /rename/),
      json("POST", "/restore", { snapshot: 42 }, /snapshot/),
      json("POST", "/prune", { keepLast: "3" }, /keepLast/),
      json("POST", "/prune", { keepLast: -1 }, /keepLast/),
      json("POST", "/prune", { keepDaily: 1.5 }, /keepDaily/),
      json("POST", "/prune", { limit: -2 }, /limit/),
      json("POST", "/prune", { dryRun: 1 }, /dryRun/),
      json("POST", "/prune", { keepTags: "release" }, /keepTags/),
      // unknown fields (names are case-sensitive)
      json("POST", "/backups", { extra: 1 }, /body\.extra: unknown field/),
      json("POST", "/backups", { Tag: "x" }, /Tag/),
      json("POST", "/restore", { snapshots: "latest" }, /snapshots/),
      json("POST", "/prune", { keep_last: 3 }, /keep_last/),
      // bad collection names
      json("POST", "/backups", { collections: ["ab"] }, /collection name/),
      json("POST", "/backups", { collections: ["-alpha"] }, /collection name/),
      json("POST", "/backups", { collections: ["alpha beta"] }, /collection name/),
      json("POST", "/backups", { collections: ["a".repeat(513)] }, /collection name/),
      json("POST", "/restore", { collections: ["../etc"] }, /collection name/),
      json("POST", "/restore", { rename: { alpha: "x" } }, /collection name/),
      json("POST", "/restore", { rename: { alpha: "alpha/../beta" } }, /collection name/),
      // bad tags
      json("POST", "/backups", { tag: "has space" }, /tag/),
      json("POST", "/backups", { tag: "" }, /tag/),
      json("POST", "/backups", { tag: "t".repeat(65) }, /tag/),
      json("POST", "/backups", { tag: "../x" }, /tag/),
      json("POST", "/prune", { keepTags: ["ok", "not ok"] }, /keepTags/),
      // bad durations
      json("POST", "/backups", { ifOlderThan: "soon" }, /duration/),
      json("POST", "/backups", { ifOlderThan: "1y" }, /duration/),
      json("POST", "/backups", { ifOlderThan: "" }, /duration/),
      json("POST", "/backups", { ifOlderThan: -5 }, /duration/),
      json("POST", "/prune", { keepWithin: "forever" }, /keepWithin/),
      json("POST", "/prune", { grace: "-1h" }, /grace/),
      // bad snapshot references in the body
      json("POST", "/restore", { snapshot: "nope" }, /snapshot id/),
      json("POST", "/restore", { snapshot: "../x" }, /snapshot id/),
      json("POST", "/restore", { snapshot: `${snap}/../x` }, /snapshot id/),
      // malformed JSON, wrong shapes, wrong content type
      { method: "POST", path: "/backups", body: "{not json", headers: {}, mentions: /not valid JSON/ },
      { method: "POST", path: "/restore", body: '{"snapshot":', headers: {}, mentions: /not valid JSON/ },
      { method: "POST", path: "/prune", body: "[]", headers: {}, mentions: /body/ },
      { method: "POST", path: "/prune", body: "null", headers: {}, mentions: /body/ },
      { method: "POST", path: "/backups", body: '"latest"', headers: {}, mentions: /body/ },
      { method: "POST", path: "/backups", body: '{"tag":"x"}', headers: { "content-type": "text/plain" }, mentions: /Content-Type: application\/json/ },
      { method: "POST", path: "/restore", body: "snapshot=latest", headers: { "content-type": "application/x-www-form-urlencoded" }, mentions: /Content-Type/ },
      // bad path ids
      json("GET", "/backups/nope", undefined, /snapshot id/),
      json("GET", "/backups/..%2Fx", undefined, /snapshot id/),
      json("GET", `/backups/${snap}x`, undefined, /snapshot id/),
      json("GET", `/backups/${snap.slice(0, -4)}ABCD`, undefined, /snapshot id/),
      json("POST", "/backups/nope/verify", undefined, /snapshot id/),
      json("POST", "/backups/..%2Fx/verify", undefined, /snapshot id/),
      json("DELETE", "/backups/nope", undefined, /snapshot id/),
      json("DELETE", "/backups/..%2F..%2Fx", undefined, /snapshot id/),
      json("DELETE", "/backups/latest", undefined, /latest/),
      // bad queries
      json("GET", "/backups?limit=abc", undefined, /limit/),
      json("GET", "/backups?limit=-1", undefined, /limit/),
      json("GET", "/backups?limit=1.5", undefined, /limit/),
      json("GET", "/backups?tag=bad%20tag", undefined, /tag/),
      json("GET", "/backups?bogus=1", undefined, /bogus/),
    ];
    for (const c of cases) {
      const r = await api.call(c.method, c.path, { body: c.body, headers: c.headers });
      const what = `${c.method} ${c.path} ${typeof c.body === "string" ? c.body : JSON.stringify(c.body)}`;
      expect(r.status, `${what}: ${r.text}`).toBe(400);
      expectError(r, 400, "invalid_request", c.mentions);
    }
    // Validation failures say where, field by field.
    const detailed = await api.post("/backups", { tag: "has space", collections: ["ab"] });
    expect(detailed.body.error.details).toEqual(
      expect.arrayContaining([
        { path: "body.tag", message: expect.stringMatching(/tag/) },
        { path: "body.collections.0", message: expect.stringMatching(/collection name/) },
      ]),
    );
    expect((await api.post("/backups", { extra: 1 })).body.error.details).toEqual([{ path: "body.extra", message: expect.stringMatching(/unknown field/) }]);
    // None of that took a snapshot or touched Chroma.
    expect(await snapshotIds(api)).toEqual([snap]);
    expect(await fingerprint("alpha")).toBe(before);
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);
  });

  it("bad input never yields a 5xx (fuzzed path ids, prune bodies and raw restore bodies)", async () => {
    const { api } = await fresh(driver);
    const snap = (await api.post("/backups")).body.id as string;
    const clientError = (r: { status: number; body: { error?: { code?: unknown; message?: unknown } } }) => {
      expect(r.status).toBeLessThan(500);
      if (r.status >= 400) {
        expect(typeof r.body.error?.code).toBe("string");
        expect(typeof r.body.error?.message).toBe("string");
      }
    };
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: "grapheme", maxLength: 40 }), async (id) => {
        const path = `/backups/${encodeURIComponent(id)}`;
        clientError(await api.get(path));
        clientError(await api.post(`${path}/verify`));
        if (id !== snap) clientError(await api.del(path));
      }),
      { numRuns: 60 },
    );
    const keys = ["keepLast", "keepHourly", "keepDaily", "keepWeekly", "keepMonthly", "keepWithin", "keepTags", "limit", "grace", "KeepLast", "other"];
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.constantFrom(...keys), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }), async (body) => {
        const r = await api.post("/prune", { ...body, dryRun: true });
        expect([200, 400]).toContain(r.status);
        clientError(r);
        if (r.status === 200) expect(r.body.dryRun).toBe(true);
      }),
      { numRuns: 80 },
    );
    const notAnObject = fc.string({ maxLength: 30 }).filter((s) => {
      if (s.trim() === "") return false;
      try {
        const v: unknown = JSON.parse(s);
        return v === null || typeof v !== "object" || Array.isArray(v);
      } catch {
        return true;
      }
    });
    await fc.assert(
      fc.asyncProperty(notAnObject, async (raw) => {
        expectError(await api.post("/restore", raw), 400, "invalid_request");
      }),
      { numRuns: 60 },
    );
    expect(await snapshotIds(api)).toEqual([snap]);
  });

  it("409 conflict while another caller holds the lock, naming the holder and expiry", async () => {
    const { store, api } = await fresh(driver);
    const first = (await api.post("/backups")).body;
    const lease = await new StoreLock(store.storage, "maintenance").acquire("backup", "other-instance-7");
    try {
      const r = await api.post("/backups");
      expectError(r, 409, "conflict", /other-instance-7/);
      expect(r.body.error.details).toEqual({ holder: "other-instance-7", operation: "backup", expiresAt: lease.info.expiresAt });
      expect(Date.parse(r.body.error.details.expiresAt)).toBeGreaterThan(Date.now());
      expectError(await api.post("/prune", { keepLast: 1 }), 409, "conflict", /other-instance-7/);
      // A restore that would replace collections needs the lock for its safety snapshot, and
      // refuses rather than replacing without one.
      const before = await fingerprint("beta");
      expectError(await api.post("/restore", { collections: ["beta"] }), 409, "conflict", /other-instance-7/);
      expect(await fingerprint("beta")).toBe(before);
      // What needs no lock still works.
      expect((await api.post("/prune", { keepLast: 1, dryRun: true })).status).toBe(200);
      const skipped = await api.post("/backups", { ifOlderThan: "1h" });
      expect(skipped.status).toBe(200);
      expect(skipped.body).toMatchObject({ skipped: true, latest: { id: first.id } });
      const status = await api.get("/status");
      expect(status.body.lock).toMatchObject({ holder: "other-instance-7", operation: "backup", expiresAt: lease.info.expiresAt });
      expect(await snapshotIds(api)).toEqual([first.id]);
    } finally {
      await lease.release();
    }
    expect((await api.get("/status")).body.lock).toBeNull();
    expect((await api.post("/backups", { force: true })).status).toBe(201);
  });

  it("413 payload_too_large for a body over the limit", async () => {
    const { api } = await fresh(driver, { maxBodyBytes: 256 });
    const small = await api.post("/prune", { dryRun: true, keepLast: 3 });
    expect(small.status).toBe(200);
    const big = { collections: Array.from({ length: 40 }, (_, i) => `collection-${i}`) };
    expect(JSON.stringify(big).length).toBeGreaterThan(256);
    for (const path of ["/backups", "/restore", "/prune"]) expectError(await api.post(path, big), 413, "payload_too_large", /256 bytes/);
    // Also when the client declares the length up front.
    const declared = await api.post("/backups", JSON.stringify(big), { headers: { "content-length": String(JSON.stringify(big).length) } });
    expectError(declared, 413, "payload_too_large", /256 bytes/);
    expect(await snapshotIds(api)).toEqual([]);
  });

  it("422 snapshot_corrupt for a flipped byte in a stored chunk; verify reports the chunk", async () => {
    const { store, api } = await fresh(driver);
    const snap = (await api.post("/backups")).body.id as string;
    const manifest = await readManifest(store.storage, snap);
    const victim = manifest.collections.find((c) => c.name === "alpha")!.chunks[0]!.hash;
    const total = manifest.collections.reduce((n, c) => n + c.chunks.length, 0);
    const undo = await corruptChunk(store, victim);

    const verify = await api.post(`/backups/${snap}/verify`);
    expect(verify.status).toBe(200);
    expect(verify.body).toMatchObject({ ok: false, chunks: total, errors: [{ chunk: victim, collection: "alpha", message: expect.stringMatching(/checksum/) }] });
    expect(verify.body.records).toBeLessThan(RECORDS);

    const alphaBefore = await fingerprint("alpha");
    const cases = [
      { snapshot: snap, collections: ["alpha"], rename: { alpha: "alpha-corrupt" } },
      { snapshot: snap, collections: ["alpha"], safetySnapshot: false },
      { snapshot: "latest", mode: "merge", safetySnapshot: false },
    ];
    for (const body of cases) {
      const r = await api.post("/restore", body);
      expectError(r, 422, "snapshot_corrupt", new RegExp(victim));
      expect(r.body.error.details).toEqual({ chunk: victim, collection: "alpha" });
    }
    const streamed = ndjsonLines(await api.post("/restore", cases[0], { headers: { accept: "application/x-ndjson" } }));
    expect(streamed.at(-1)).toMatchObject({ event: "error", status: 422, error: { code: "snapshot_corrupt", details: { chunk: victim, collection: "alpha" } } });
    // Nothing was written: the original is intact and nothing was left aside.
    expect(await fingerprint("alpha")).toBe(alphaBefore);
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);

    await undo();
    expect((await api.post(`/backups/${snap}/verify`)).body).toMatchObject({ ok: true, records: RECORDS, errors: [] });
  });

  it("503 chroma_unavailable when Chroma is down, with its URL in the message", async () => {
    const { store, api } = await fresh(driver);
    const snap = (await api.post("/backups")).body.id as string;
    const dead = `http://127.0.0.1:${await freePort()}`;
    const down = client(makeApp(makeService({ chromaUrl: dead, storage: store.storage, chromaTimeoutMs: 2000 })));
    const backup = await down.post("/backups");
    expectError(backup, 503, "chroma_unavailable", new RegExp(dead.replace(/[.:/]/g, "\\$&")));
    expect(backup.body.error.details).toMatchObject({ url: dead });
    expectError(await down.post("/restore", { safetySnapshot: false }), 503, "chroma_unavailable", new RegExp(dead));
    const streamed = ndjsonLines(await down.post("/backups", {}, { headers: { accept: "application/x-ndjson" } }));
    expect(streamed.at(-1)).toMatchObject({ event: "error", status: 503, error: { code: "chroma_unavailable", message: expect.stringContaining(dead) } });
    // /status still answers, and says so; reading the store needs no Chroma.
    const status = await down.get("/status");
    expect(status.status).toBe(200);
    expect(status.body.chroma).toEqual({ url: dead, reachable: false, version: null, collections: null, records: null });
    expect(status.body.storage.snapshots).toBe(1);
    expect(status.body.lock).toBeNull(); // the failed backup released the lock
    expect((await down.get("/backups")).body.snapshots.map((s: { id: string }) => s.id)).toEqual([snap]);
    expect((await down.post(`/backups/${snap}/verify`)).body.ok).toBe(true);
    expect(await snapshotIds(api)).toEqual([snap]);
  });

  it("503 storage_unavailable when the store is down, naming the driver", async () => {
    const { store } = await fresh(driver);
    const broken: Storage[] = [unavailable(store.storage)];
    if (store.root) {
      // BACKUP_DIR pointing at a regular file.
      const file = join(store.root, "not-a-directory");
      await writeFile(file, "x");
      broken.push(fsStorage(file));
    }
    for (const storage of broken) {
      const api = client(makeApp(makeService({ chromaUrl: chroma.url, storage })));
      const calls: [string, string, unknown][] = [
        ["POST", "/backups", undefined],
        ["GET", "/backups", undefined],
        ["GET", "/backups/latest", undefined],
        ["POST", "/restore", {}],
        ["POST", "/prune", {}],
        ["POST", "/prune", { dryRun: true }],
      ];
      for (const [method, path, body] of calls) {
        const r = await api.call(method, path, { body });
        expectError(r, 503, "storage_unavailable", new RegExp(`\\(${driver}\\)`));
        expect(r.body.error.details).toMatchObject({ driver });
      }
      // /status never fails: it says which parts it could not read.
      const status = await api.get("/status");
      expect(status.status).toBe(200);
      expect(status.body.lock).toBe("unknown");
      expect(status.body.errors.map((e: { part: string }) => e.part).sort()).toEqual(["catalog", "images", "lock", "objects"]);
      expect((await api.get("/health", { auth: false })).status).toBe(200);
    }
    expect(await listCollectionNames(chroma.url)).toEqual(["alpha", "beta"]);
  });
});
