import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, inject, it, vi } from "vitest";
import worker, { type WorkerEnv } from "../../runtime/worker.js";
import { readManifest } from "../../lib/snapshot/catalog.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { r2Storage } from "../../lib/storage/r2.js";
import { addRecords, collectionId, makeRecords } from "../fixtures/dataset.js";
import { CHURN } from "./dataset.js";

// The cron trigger of runtime/worker.ts: `scheduled` prunes with the retention rules of
// its env. Snapshots are taken through the Worker's fetch from the real Chroma of
// global-setup.ts, changing CHURN between them so the older snapshots hold chunks the newer lack.

const chromaUrl = inject("chromaUrl");
const TOKEN = "workers-test-token";
const PREFIX = "wk-prune/";

/** The default export as the runtime sees it: an ExportedHandler, whose scheduled takes (controller, env, ctx). */
const handler: ExportedHandler<WorkerEnv> = worker;
/** As deployed (wrangler.toml keeps the newest 24 and a daily 7), in a prefix of its own. */
const deployed: WorkerEnv = { ...env, CHROMA_URL: chromaUrl, BACKUP_API_TOKEN: TOKEN, STORAGE_PREFIX: PREFIX };
/** The same deployment with the retention the cron should apply: the newest 2, nothing else; the cron prunes only. */
const keepTwo: WorkerEnv = { ...deployed, RETENTION_KEEP_LAST: "2", RETENTION_KEEP_DAILY: "", BACKUP_INTERVAL: "off" };

const store = withPrefix(r2Storage(env.BACKUP_BUCKET), PREFIX);

async function call(method: string, path: string, body?: unknown): Promise<Response> {
  const init: RequestInit = { method, headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  return worker.fetch(new Request(`http://worker${path}`, init), deployed);
}

async function listIds(): Promise<string[]> {
  const res = await call("GET", "/backups");
  expect(res.status).toBe(200);
  return ((await res.json()) as { snapshots: { id: string }[] }).snapshots.map((s) => s.id);
}

async function chunkHashes(): Promise<string[]> {
  const listed = await env.BACKUP_BUCKET.list({ prefix: `${PREFIX}chunks/` });
  return listed.objects.map((o) => o.key.slice(o.key.lastIndexOf("/") + 1)).sort();
}

const distinct = (hashes: string[]) => [...new Set(hashes)].sort();

async function chunksOf(id: string): Promise<string[]> {
  const manifest = await readManifest(store, id);
  return manifest.collections.flatMap((c) => c.chunks.map((ref) => ref.hash));
}

/** Fires the cron as workerd would, waits for what it left running, and returns its log lines. */
async function fireCron(workerEnv: WorkerEnv): Promise<Record<string, unknown>[]> {
  const lines: Record<string, unknown>[] = [];
  const capture = (line: unknown) => void lines.push(JSON.parse(String(line)) as Record<string, unknown>);
  const out = vi.spyOn(console, "log").mockImplementation(capture);
  const err = vi.spyOn(console, "error").mockImplementation(capture);
  try {
    const controller = createScheduledController({ cron: "17 * * * *", scheduledTime: Date.now() });
    const ctx = createExecutionContext();
    await handler.scheduled!(controller, workerEnv, ctx);
    await waitOnExecutionContext(ctx);
    return lines;
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe("runtime/worker.ts scheduled (cron) backup", () => {
  it("takes the automatic backup when data changed, commits nothing when it did not, then prunes", async () => {
    const cronEnv: WorkerEnv = { ...deployed, STORAGE_PREFIX: "wk-cron/", RETENTION_KEEP_LAST: "5" };
    const cronStore = withPrefix(r2Storage(env.BACKUP_BUCKET), "wk-cron/");
    const manifests = async () => (await env.BACKUP_BUCKET.list({ prefix: "wk-cron/snapshots/" })).objects.length;

    const first = await fireCron(cronEnv);
    expect(first.map((l) => l.message)).toEqual(["scheduled backup", "scheduled prune"]);
    expect(await manifests()).toBe(1);

    const idle = await fireCron(cronEnv);
    expect(idle[0]).toMatchObject({ message: "scheduled backup skipped", reason: "unchanged" });
    expect(await manifests(), "unchanged data: no new snapshot").toBe(1);

    const id = await collectionId(chromaUrl, CHURN.name);
    await addRecords(chromaUrl, id, makeRecords(3, CHURN.dim, CHURN.seed + 100, CHURN.name), "upsert");
    const changed = await fireCron(cronEnv);
    expect(changed[0]).toMatchObject({ message: "scheduled backup", outcome: "ok" });
    expect(await manifests()).toBe(2);
    const newest = await readManifest(cronStore, changed[0]!.snapshot as string);
    expect(newest.collections.find((c) => c.name === CHURN.name)?.records).toBe(CHURN.count);
  });
});

describe("runtime/worker.ts scheduled (cron) prune", () => {
  it("keeps only the newest RETENTION_KEEP_LAST snapshots and sweeps the chunks only they used", async () => {
    const id = await collectionId(chromaUrl, CHURN.name);
    for (let round = 1; round <= 4; round++) {
      // New embeddings for a third of the records: each snapshot gets chunks the others lack.
      await addRecords(chromaUrl, id, makeRecords(CHURN.count / 3, CHURN.dim, CHURN.seed + round, CHURN.name), "upsert");
      const res = await call("POST", "/backups", { collections: [CHURN.name] });
      expect(res.status).toBe(201);
      expect(await res.json()).toMatchObject({ records: CHURN.count });
    }
    const before = await listIds();
    expect(before).toHaveLength(4);
    const owned = await Promise.all(before.map(chunksOf));
    const all = distinct(owned.flat());
    const kept = distinct(owned.slice(0, 2).flat());
    const orphans = all.filter((h) => !kept.includes(h));
    expect(orphans.length, "chunks only the two oldest snapshots use").toBeGreaterThan(0);
    expect(await chunkHashes()).toEqual(all);

    // The cron: the two oldest manifests go, and with them the chunks only they used: a prune
    // holds the lock, so no backup can be uploading chunks it has not referenced yet.
    const first = await fireCron(keepTwo);
    expect(first).toMatchObject([{ level: "info", message: "scheduled prune", outcome: "ok", deleted: before.slice(2).reverse(), chunksDeleted: orphans.length }]);
    expect(await listIds()).toEqual(before.slice(0, 2));
    expect(await chunkHashes()).toEqual(kept);
    const again = await fireCron(keepTwo);
    expect(again).toMatchObject([{ message: "scheduled prune", outcome: "ok", deleted: [], chunksDeleted: 0 }]);
    expect(await env.BACKUP_BUCKET.list({ prefix: `${PREFIX}locks/` }).then((l) => l.objects.length), "the prune released its lock").toBe(0);

    // What is left restores: the newest snapshot verifies through the Worker.
    const verified = await call("POST", `/backups/${before[0]}/verify`);
    expect(await verified.json()).toMatchObject({ ok: true, records: CHURN.count });
  });

  it("rethrows when misconfigured, after logging why, so the failed run shows in the cron's status", async () => {
    for (const [broken, why] of [
      [{ ...keepTwo, CHROMA_URL: "" }, /CHROMA_URL/],
      [{ ...keepTwo, RETENTION_KEEP_LAST: "two" }, /RETENTION_KEEP_LAST/],
    ] as const) {
      const errors = vi.spyOn(console, "error").mockImplementation(() => {});
      try {
        await expect(handler.scheduled!(createScheduledController(), broken, createExecutionContext())).rejects.toThrow(why);
        expect(errors).toHaveBeenCalledOnce();
        expect(JSON.parse(String(errors.mock.calls[0]![0]))).toMatchObject({ level: "error", message: "scheduled backup and prune failed", error: expect.stringMatching(why) });
      } finally {
        errors.mockRestore();
      }
    }
  });
});
