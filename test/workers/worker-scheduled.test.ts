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
const HOUR = 3600_000;

/** The default export as the runtime sees it: an ExportedHandler, whose scheduled takes (controller, env, ctx). */
const handler: ExportedHandler<WorkerEnv> = worker;
/** As deployed (wrangler.toml keeps the newest 24 and a daily 7), in a prefix of its own. */
const deployed: WorkerEnv = { ...env, CHROMA_URL: chromaUrl, BACKUP_API_TOKEN: TOKEN, STORAGE_PREFIX: PREFIX };
/** The same deployment with the retention the cron should apply: the newest 2, nothing else. */
const keepTwo: WorkerEnv = { ...deployed, RETENTION_KEEP_LAST: "2", RETENTION_KEEP_DAILY: "" };

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

describe("runtime/worker.ts scheduled (cron) prune", () => {
  it("keeps only the newest RETENTION_KEEP_LAST snapshots, and sweeps their chunks once the 1h grace has passed", async () => {
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

    // First cron: the two oldest manifests go; their chunks are younger than the grace period, so stay.
    const first = await fireCron(keepTwo);
    expect(first).toMatchObject([{ level: "info", message: "scheduled prune", outcome: "ok", deleted: before.slice(2).reverse(), chunksDeleted: 0 }]);
    expect(await listIds()).toEqual(before.slice(0, 2));
    expect(await chunkHashes()).toEqual(all);

    // Two hours later (only Date is faked: R2 keeps the real upload times) the next cron sweeps them.
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() + 2 * HOUR);
    const later = await fireCron(keepTwo);
    vi.useRealTimers();
    expect(later).toMatchObject([{ message: "scheduled prune", outcome: "ok", deleted: [], chunksDeleted: orphans.length }]);
    expect(await listIds()).toEqual(before.slice(0, 2));
    expect(await chunkHashes()).toEqual(kept);
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
        expect(JSON.parse(String(errors.mock.calls[0]![0]))).toMatchObject({ level: "error", message: "scheduled prune failed", error: expect.stringMatching(why) });
      } finally {
        errors.mockRestore();
      }
    }
  });
});
