/**
 * The operating surfaces (API.md "Operating surfaces") against a real Chroma and the fs
 * store: /metrics read by a real Prometheus text parser, /openapi.json checked by an
 * OpenAPI 3.1 validator and against the app's routes, restore drills on a good and a
 * damaged snapshot, and RPO/RTO in /status.
 */
import { Validator } from "@seriousme/openapi-schema-validator";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openApiPath, ROUTES } from "../../handlers/openapi.js";
import { AutoBackup } from "../../lib/auto-backup.js";
import { readManifest } from "../../lib/snapshot/catalog.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import { readAll } from "../../lib/storage/streams.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { client, makeApp, makeService, makeStore, resetChroma, type Client, type Store } from "./harness.js";

const ALPHA = { name: "alpha", count: 120, dim: 8, seed: 31, metadataJson: '{"owner":"ops"}' };
const BETA = { name: "beta", count: 80, dim: 4, seed: 32 };

let chroma: TestChroma;
let store: Store;
let api: Client;
let app: ReturnType<typeof makeApp>;

beforeAll(async () => {
  chroma = await startTestChroma();
  await resetChroma(chroma.url, [ALPHA, BETA]);
  store = await makeStore("fs");
  app = makeApp(makeService({ chromaUrl: chroma.url, storage: store.storage }));
  api = client(app);
});

afterAll(async () => {
  await store?.cleanup();
  await chroma?.close();
});

function family(text: string, name: string) {
  const f = parsePrometheusTextFormat(text).find((x) => x.name === name);
  expect(f, `metric ${name} in:\n${text}`).toBeDefined();
  return f!;
}

describe("RPO and RTO in /status", () => {
  it("before any restore: the RTO is estimated at the default rate and says so; the RPO says no snapshot", async () => {
    const s = await api.get("/status");
    expect(s.status).toBe(200);
    expect(s.body.rpo).toEqual({ lastBackupAgeSeconds: null, unprotectedChanges: true, nextBackupAt: null });
    expect(s.body.rto).toEqual({ estimatedRestoreSeconds: null, basis: "no snapshot to restore" });
    expect((await api.post("/backups", {})).status).toBe(201);
    const after = await api.get("/status");
    expect(after.body.rpo.lastBackupAgeSeconds).toBeGreaterThanOrEqual(0);
    expect(after.body.rto.estimatedRestoreSeconds).toBeGreaterThan(0);
    expect(after.body.rto.basis).toMatch(/^no restore measured yet/);
  });
});

describe("RPO from the automatic backups", () => {
  it("says whether there are unprotected changes and when the next automatic backup runs", async () => {
    const own = await makeStore("memory");
    const service = makeService({ chromaUrl: chroma.url, storage: own.storage });
    const ownApi = client(makeApp(service));
    let writes = 5;
    const auto = new AutoBackup({ service, intervalSeconds: 3600, changeSignal: () => writes, onStopTimeoutSeconds: 0 });
    auto.start();
    try {
      const first = (await ownApi.get("/status")).body.rpo;
      expect(first.unprotectedChanges).toBe(true);
      expect(Date.parse(first.nextBackupAt) - Date.now()).toBeGreaterThan(3000_000);
      expect((await ownApi.post("/backups", {})).status).toBe(201);
      const protectedNow = (await ownApi.get("/status")).body.rpo;
      expect(protectedNow).toMatchObject({ unprotectedChanges: false, nextBackupAt: null });
      expect(protectedNow.lastBackupAgeSeconds).toBeGreaterThanOrEqual(0);
      writes++;
      const changed = (await ownApi.get("/status")).body.rpo;
      expect(changed.unprotectedChanges).toBe(true);
      expect(changed.nextBackupAt).not.toBeNull();
    } finally {
      auto.stop();
    }
  });
});

describe("restore drills", () => {
  it("a drill of a good snapshot passes, leaves no scratch collection, is recorded with the snapshot and measured for the RTO", async () => {
    const before = (await listCollectionNames(chroma.url)).sort();
    const r = await api.post("/backups/latest/drill");
    expect(r.status, r.text).toBe(200);
    expect(r.body.ok, JSON.stringify(r.body.checks)).toBe(true);
    expect(r.body.records).toBe(ALPHA.count + BETA.count);
    expect(Number.isInteger(r.body.durationMs)).toBe(true);
    const names = r.body.checks.map((c: { name: string; collection: string | null }) => `${c.name}:${c.collection}`);
    expect(names).toEqual(expect.arrayContaining(["restore:null", "count:alpha", "nearest:alpha", "content:alpha", "count:beta", "nearest:beta", "content:beta", "cleanup:null"]));
    expect((await listCollectionNames(chroma.url)).sort()).toEqual(before);

    const got = await api.get(`/backups/${r.body.snapshot}`);
    expect(got.body.drill.ok).toBe(true);
    const list = await api.get("/backups");
    expect(list.body.snapshots[0].drill.ok).toBe(true);
    const s = await api.get("/status");
    expect(s.body.rto.basis).toMatch(/^measured: 1 restore/);
    expect(s.body.chroma.collections).toBe(2);
  });

  it("a drill of a snapshot with a damaged chunk fails, says which check and why, and still removes its scratch collections", async () => {
    await addRecords(chroma.url, await collectionId(chroma.url, "alpha"), makeRecords(30, ALPHA.dim, 99, "extra"));
    const taken = await api.post("/backups", {});
    expect(taken.status).toBe(201);
    const manifest = await readManifest(store.storage, taken.body.id);
    const alpha = manifest.collections.find((c) => c.name === "alpha")!;
    const key = chunkKey(alpha.chunks[0]!.hash);
    const bytes = await readAll(await store.storage.get(key));
    const damaged = new Uint8Array(bytes);
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
    await store.storage.put(key, damaged);

    const before = (await listCollectionNames(chroma.url)).sort();
    const r = await api.post(`/backups/${taken.body.id}/drill`);
    expect(r.status, r.text).toBe(200);
    expect(r.body.ok).toBe(false);
    const restoreCheck = r.body.checks.find((c: { name: string }) => c.name === "restore");
    expect(restoreCheck.ok).toBe(false);
    expect(restoreCheck.message).toMatch(/restore failed/);
    expect(restoreCheck.message).toMatch(new RegExp(alpha.chunks[0]!.hash.slice(0, 12)));
    expect(r.body.checks.find((c: { name: string }) => c.name === "cleanup").ok).toBe(true);
    expect((await listCollectionNames(chroma.url)).sort()).toEqual(before);
    expect((await api.get(`/backups/${taken.body.id}`)).body.drill.ok).toBe(false);

    const m = await api.get("/metrics");
    expect(family(m.text, "chroma_backup_last_drill_success").metrics[0]!.value).toBe("0");
    const ops = family(m.text, "chroma_backup_operations_total").metrics;
    expect(ops.find((x) => x.labels?.operation === "drill" && x.labels.outcome === "error")?.value).toBe("1");
    expect(ops.find((x) => x.labels?.operation === "drill" && x.labels.outcome === "ok")?.value).toBe("1");
  });

  it("an unknown snapshot is a 404, a malformed id a 400", async () => {
    expect((await api.post("/backups/20200101T000000Z-abcd/drill")).status).toBe(404);
    expect((await api.post("/backups/nope/drill")).status).toBe(400);
  });
});

describe("GET /metrics", () => {
  it("needs the token", async () => {
    expect((await api.get("/metrics", { auth: false })).status).toBe(401);
  });

  it("is Prometheus text a real parser reads, with every metric the contract names", async () => {
    const m = await api.get("/metrics");
    expect(m.status).toBe(200);
    expect(m.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const status = (await api.get("/status")).body;
    const gauge = (name: string) => Number(family(m.text, name).metrics[0]!.value);
    expect(gauge("chroma_backup_snapshots")).toBe(status.storage.snapshots);
    expect(gauge("chroma_backup_stored_bytes")).toBe(status.storage.storedBytes);
    expect(gauge("chroma_backup_logical_bytes")).toBe(status.storage.logicalBytes);
    expect(gauge("chroma_backup_last_success_timestamp_seconds")).toBe(Date.parse(status.lastBackup.createdAt) / 1000);
    expect(gauge("chroma_backup_restore_estimate_seconds")).toBe(status.rto.estimatedRestoreSeconds);
    const ops = family(m.text, "chroma_backup_operations_total");
    expect(ops.type).toBe("COUNTER");
    expect(ops.metrics.find((x) => x.labels?.operation === "backup" && x.labels.outcome === "ok")?.value).toBe("2");
    const durations = family(m.text, "chroma_backup_duration_seconds");
    expect(durations.type).toBe("SUMMARY");
    const backup = durations.metrics.find((x) => x.labels?.operation === "backup")!;
    expect(backup.count).toBe("2");
    expect(Number(backup.sum)).toBeGreaterThan(0);
  });
});

describe("GET /openapi.json", () => {
  it("needs no token and is a valid OpenAPI 3.1 document", async () => {
    const r = await api.get("/openapi.json", { auth: false });
    expect(r.status).toBe(200);
    expect(r.body.openapi).toBe("3.1.0");
    const result = await new Validator().validate(r.body);
    expect(result.errors ?? [], JSON.stringify(result.errors)).toEqual([]);
    expect(result.valid).toBe(true);
    // Generated from the valibot schemas: the backup body's fields are there, strict.
    const backup = r.body.paths["/backups"].post.requestBody.content["application/json"].schema;
    expect(Object.keys(backup.properties).sort()).toEqual(["collections", "force", "ifOlderThan", "tag"]);
    expect(backup.additionalProperties).toBe(false);
    expect(r.body.paths["/backups/{id}/drill"].post.responses["404"]).toBeDefined();
    expect(r.body.paths["/status"].get.responses["401"]).toBeDefined();
    expect(r.body.paths["/openapi.json"].get.security).toEqual([]);
  });

  it("documents exactly the routes the app serves", async () => {
    const doc = (await api.get("/openapi.json")).body;
    const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)).sort();
    const served = [...new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${openApiPath(r.path)}`))].sort();
    expect(documented).toEqual(served);
    expect(served.length).toBe(ROUTES.length);
  });

  it("GET / is the dashboard, served without the token", async () => {
    const r = await api.get("/", { auth: false });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/html/);
    expect(r.text).toMatch(/<title>chroma-backup<\/title>/);
    expect(r.text).not.toMatch(/src="http|href="http/);
  });
});

describe("the exposition writer", () => {
  it("escapes label values so a parser reads them back unchanged", async () => {
    const { writeExposition } = await import("../../lib/metrics.js");
    const value = 'a "quoted" back\\slash\nnewline';
    const text = writeExposition([{ name: "t_total", help: "h", type: "counter", samples: [{ labels: { v: value }, value: 3 }] }]);
    const [f] = parsePrometheusTextFormat(text);
    expect(f!.metrics[0]!.labels!.v).toBe(value);
    expect(f!.metrics[0]!.value).toBe("3");
  });
});
