/**
 * Issue 12, part 4: a store holding a 2,000-record snapshot that cannot be read at startup
 * (s3rver stopped, then started again on the same port and directory). The service runs
 * over a Chroma it does not own (CHROMA_URL), where the app can write while the startup
 * restore is failing. Nothing may let a near-empty Chroma become "latest" unnoticed, and
 * retention must never forget the good snapshot because of one bad day.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { DROP_WARNING_PREFIX } from "../../lib/snapshot/drop.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { s3Storage } from "../../lib/storage/s3.js";
import { startService, type RunningService } from "../../runtime/node.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { startS3rver, type TestS3rver } from "../fixtures/s3rver.js";

const TOKEN = "unreadable-store-token";
const BUCKET = "unreadable";
const BIG = 2000;

interface Line {
  level: LogLevel;
  message: string;
  fields?: LogFields;
}

interface Summary {
  id: string;
  records: number;
  tag: string | null;
}

let chroma: TestChroma;
let s3: TestS3rver | null = null;
let s3Port: number;
let s3Dir: string;
let bigId: string;
const tempDirs: string[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const endpoint = () => `http://127.0.0.1:${s3Port}`;
const store = () => withPrefix(s3Storage({ endpoint: endpoint(), bucket: BUCKET, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", forcePathStyle: true }), "chromadb/");

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `unreadable-${name}-`));
  tempDirs.push(dir);
  return dir;
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  chroma = await startTestChroma();
  s3Port = await freePort();
  s3Dir = await tempDir("s3rver");
  s3 = await startS3rver([BUCKET], { port: s3Port, directory: s3Dir });
  // The good history: one 2,000-record snapshot; then the Chroma is fresh again (a redeploy).
  const id = await createCollection(chroma.url, "docs", '{"hnsw":{"space":"l2"}}', '{"k":1}');
  await addRecords(chroma.url, id, makeRecords(BIG, 8, 5, "docs"));
  bigId = (await takeSnapshot(new ChromaRest({ url: chroma.url }), store())).id;
  for (const name of await listCollectionNames(chroma.url)) await new ChromaRest({ url: chroma.url }).deleteCollection(name);
}, 120_000);

afterAll(async () => {
  await s3?.close();
  await chroma?.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("a store unreadable at startup (s3rver down, then up again on the same port and directory)", () => {
  it("the restore fails and retries; ifOlderThan is 409 restore_pending; after the store is back automatic backups resume; a much smaller backup warns and retention keeps the big snapshot", async () => {
    await s3!.close();
    s3 = null;
    const lines: Line[] = [];
    const running: RunningService = await startService(
      {
        CHROMA_URL: chroma.url,
        STORAGE: "s3",
        S3_ENDPOINT: endpoint(),
        S3_BUCKET: BUCKET,
        S3_ACCESS_KEY_ID: "S3RVER",
        S3_SECRET_ACCESS_KEY: "S3RVER",
        S3_FORCE_PATH_STYLE: "true",
        PORT: "0",
        HOST: "127.0.0.1",
        BACKUP_API_TOKEN: TOKEN,
        DATA_DIR: await tempDir("data"),
        BACKUP_INTERVAL: "3s",
        RETENTION_KEEP_LAST: "3",
      },
      (level, message, fields) => lines.push({ level, message, fields }),
      { restoreRetry: { initialDelayMs: 200, maxDelayMs: 1000 } },
    );
    const api = (path: string, body?: unknown) =>
      fetch(`${running.url}${path}`, {
        method: body === undefined ? "GET" : "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    try {
      // The service starts and serves; the restore fails and is retried, logged at error level.
      expect((await fetch(`${running.url}/health`)).status).toBe(200);
      await until("two failed restore attempts", () => (lines.filter((l) => l.level === "error" && /^STARTUP RESTORE FAILED/.test(l.message)).length >= 2 ? true : undefined));
      expect(running.service.startupRestore.state).toBe("failed");
      const ready = await fetch(`${running.url}/ready`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reason: string }).reason).toMatch(/^startup restore failed, retrying: .*s3/);

      // The app writes one record into its Chroma meanwhile.
      const scratch = await createCollection(chroma.url, "docs", '{"hnsw":{"space":"l2"}}', '{"k":2}');
      await addRecords(chroma.url, scratch, makeRecords(1, 8, 9, "new"));

      // The after-upload call is an automatic backup: held, at error level.
      const held = await api("/backups", { ifOlderThan: "1s" });
      expect(held.status).toBe(409);
      const heldBody = (await held.json()) as { error: { code: string; message: string } };
      expect(heldBody.error.code).toBe("restore_pending");
      expect(lines.some((l) => l.level === "error" && /^automatic backup refused: the startup restore has not succeeded yet/.test(l.message))).toBe(true);

      // The store comes back on the same port and directory: the retried restore succeeds
      // (the Chroma now holds the app's record: if-empty restores nothing over it).
      s3 = await startS3rver([BUCKET], { port: s3Port, directory: s3Dir });
      expect(await running.restored).toBe("done");
      expect(running.service.startupRestore.state).toBe("done");
      const snapshotsBefore = ((await (await api("/backups")).json()) as { snapshots: Summary[] }).snapshots;
      expect(snapshotsBefore.map((s) => s.id)).toEqual([bigId]);

      // An operator's plain backup of the near-empty Chroma: taken, with the drop warning.
      const small = await api("/backups", {});
      expect(small.status).toBe(201);
      const smallBody = (await small.json()) as Summary & { warnings: string[] };
      expect(smallBody.records).toBe(1);
      expect(smallBody.warnings.some((w) => w.startsWith(DROP_WARNING_PREFIX)), JSON.stringify(smallBody.warnings)).toBe(true);
      expect(lines.some((l) => l.level === "warn" && l.message.startsWith(DROP_WARNING_PREFIX))).toBe(true);

      // Automatic backups resume: the interval runs (unchanged: nothing), then commits a change.
      await until("an interval backup that found nothing changed", () => (lines.some((l) => /^interval backup: unchanged since snapshot/.test(l.message)) ? true : undefined), 15_000);
      await addRecords(chroma.url, await collectionId(chroma.url, "docs"), makeRecords(1, 8, 10, "newer"));
      await until("an interval backup commit", () => (lines.some((l) => l.message === "interval backup committed") ? true : undefined), 15_000);

      // More small backups than RETENTION_KEEP_LAST: the big snapshot stays (RETENTION_KEEP_BEFORE_DROP).
      for (let i = 0; i < 3; i++) expect((await api("/backups", { force: true })).status).toBe(201);
      const after = ((await (await api("/backups")).json()) as { snapshots: Summary[] }).snapshots;
      const small3 = after.filter((s) => s.id !== bigId);
      expect(small3, JSON.stringify(after)).toHaveLength(3); // retention ran: older small ones are gone
      expect(small3.every((s) => s.records <= 2)).toBe(true);
      expect(after.find((s) => s.id === bigId), "retention forgot the only big snapshot").toMatchObject({ records: BIG });
      const verified = await api(`/backups/${bigId}/verify`, {});
      expect(((await verified.json()) as { ok: boolean }).ok).toBe(true);
    } finally {
      await running.stop();
    }
  }, 90_000);
});
