import { env, exports } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import worker, { type WorkerEnv } from "../../runtime/worker.js";
import { collectionId, describeCollection, dumpCollection, listCollectionNames } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";
import { DOCS } from "./dataset.js";

// The Worker's own fetch (runtime/worker.ts), under workerd, against a real Chroma that
// global-setup.ts started from Node: backup into the emulated R2 bucket, list, verify,
// restore under another name, and compare every record through Chroma's REST API.

const chromaUrl = inject("chromaUrl");
const TOKEN = "workers-test-token";
const COPY = `${DOCS.name}-copy`;

/** wrangler.toml's vars and the R2 binding, plus what a deployment sets as vars/secrets. */
const workerEnv: WorkerEnv = { ...env, CHROMA_URL: chromaUrl, BACKUP_API_TOKEN: TOKEN, STORAGE_PREFIX: "wk-e2e/" };

function call(method: string, path: string, body?: unknown, token: string | null = TOKEN): Promise<Response> {
  const headers = new Headers();
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  if (body !== undefined) headers.set("content-type", "application/json");
  return worker.fetch(new Request(`http://worker${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }), workerEnv);
}

async function json<T = Record<string, unknown>>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

interface Summary {
  id: string;
  createdAt: string;
  collections: number;
  records: number;
  bytes: number;
}

describe("runtime/worker.ts under workerd, over a real Chroma", () => {
  it("reaches the Chroma started from Node (outbound fetch to 127.0.0.1)", async () => {
    expect(chromaUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${chromaUrl}/api/v2/heartbeat`)).status).toBe(200);
    expect(await listCollectionNames(chromaUrl)).toContain(DOCS.name);
  });

  it("serves the same operating surfaces: the dashboard page, /openapi.json, /metrics, /ready", async () => {
    const page = await call("GET", "/", undefined, null);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await page.text()).toMatch(/<html[\s\S]*chroma-backup/i);
    const openapi = await call("GET", "/openapi.json", undefined, null);
    expect(await json(openapi)).toMatchObject({ openapi: expect.stringMatching(/^3\.1/) });
    const metrics = await call("GET", "/metrics");
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^chroma_backup_snapshots /m);
    expect(await json(await call("GET", "/ready", undefined, null))).toEqual({ ready: true });
  });

  it("the pool's main is the real Worker: as wrangler.toml configures it (no secret), only /health answers", async () => {
    const health = await exports.default.fetch("http://worker/health");
    expect(health.status).toBe(200);
    expect(await json(health)).toMatchObject({ ok: true, version: expect.any(String) });
    const backups = await exports.default.fetch("http://worker/backups", { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(backups.status).toBe(500);
    expect(await json(backups)).toMatchObject({ error: { code: "misconfigured", message: expect.stringMatching(/BACKUP_API_TOKEN/) } });
  });

  it("answers /health without a token, 401 without or with a wrong token elsewhere", async () => {
    const health = await call("GET", "/health", undefined, null);
    expect(health.status).toBe(200);
    expect(await json(health)).toMatchObject({ ok: true });

    for (const token of [null, "wrong-token"]) {
      const res = await call("GET", "/backups", undefined, token);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect(await json(res)).toMatchObject({ error: { code: "unauthorized" } });
    }
  });

  it("answers 500 misconfigured (not 401) when the deployment has no BACKUP_API_TOKEN", async () => {
    const res = await worker.fetch(new Request("http://worker/backups", { headers: { authorization: `Bearer ${TOKEN}` } }), { ...workerEnv, BACKUP_API_TOKEN: undefined });
    expect(res.status).toBe(500);
    expect(await json(res)).toMatchObject({ error: { code: "misconfigured" } });
  });

  it("backs up into R2, lists, verifies, restores under another name: every record equal", async () => {
    const created = await call("POST", "/backups", { collections: [DOCS.name], tag: "workers-e2e" });
    expect(created.status).toBe(201);
    const summary = await json<Summary & { skipped: boolean }>(created);
    expect(summary).toMatchObject({ skipped: false, collections: 1, records: DOCS.count, tag: "workers-e2e" });

    // The snapshot really is in the R2 bucket, under the configured prefix.
    const stored = await env.BACKUP_BUCKET.list({ prefix: "wk-e2e/snapshots/" });
    expect(stored.objects.map((o) => o.key)).toContain(`wk-e2e/snapshots/${summary.id}.json`);

    const listed = await call("GET", "/backups");
    expect(listed.status).toBe(200);
    const { snapshots } = await json<{ snapshots: Summary[] }>(listed);
    expect(snapshots[0]).toMatchObject({ id: summary.id, records: DOCS.count, collections: 1 });

    const verified = await call("POST", `/backups/${summary.id}/verify`);
    expect(verified.status).toBe(200);
    expect(await json(verified)).toMatchObject({ ok: true, records: DOCS.count, errors: [] });

    const restored = await call("POST", "/restore", { snapshot: summary.id, collections: [DOCS.name], rename: { [DOCS.name]: COPY } });
    expect(restored.status).toBe(200);
    expect(await json(restored)).toMatchObject({ restored: true, snapshot: summary.id, collections: [{ name: COPY, records: DOCS.count }] });

    const original = await describeCollection(chromaUrl, DOCS.name);
    const copy = await describeCollection(chromaUrl, COPY);
    expect(copy).not.toBeNull();
    expect(copy!.id).not.toBe(original!.id);
    expect(copy!.metadata).toEqual(original!.metadata);
    const before = parseDump(await dumpCollection(chromaUrl, await collectionId(chromaUrl, DOCS.name)));
    const after = parseDump(await dumpCollection(chromaUrl, copy!.id));
    expect(before.size).toBe(DOCS.count);
    expectSameRecords(before, after, false);
  });
});
