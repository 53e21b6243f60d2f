/**
 * GET /ready and the startup restore's retries, through the Node runtime (startService)
 * in this process: a Chroma that is down at first (its port answered later by a real TCP
 * proxy to a test Chroma), a store holding a snapshot, real HTTP.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, connect, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { compose } from "../../runtime/compose.js";
import { startService, type RunningService } from "../../runtime/node.js";
import { loadConfig } from "../../lib/config.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";

const TOKEN = "ready-test-token";
let chroma: TestChroma;
let storeDir: string;
const tempDirs: string[] = [];
const proxies: Server[] = [];

interface Line {
  level: LogLevel;
  message: string;
  fields?: LogFields;
}

/** A TCP proxy on `port` to `target`, from now on. */
function proxy(port: number, target: number): Promise<Server> {
  const server = createServer((client) => {
    const upstream = connect(target, "127.0.0.1");
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  proxies.push(server);
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function ready(url: string): Promise<{ status: number; body: { ready: boolean; reason?: string } }> {
  const res = await fetch(`${url}/ready`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; reason?: string } };
}

async function start(chromaUrl: string, lines: Line[]): Promise<RunningService> {
  const dataDir = await mkdtemp(join(tmpdir(), "ready-data-"));
  tempDirs.push(dataDir);
  return startService(
    { CHROMA_URL: chromaUrl, STORAGE: "fs", BACKUP_DIR: storeDir, PORT: "0", HOST: "127.0.0.1", BACKUP_API_TOKEN: TOKEN, DATA_DIR: dataDir },
    (level, message, fields) => lines.push({ level, message, fields }),
    { restoreRetry: { initialDelayMs: 100, maxDelayMs: 400 } },
  );
}

beforeAll(async () => {
  chroma = await startTestChroma();
  storeDir = await mkdtemp(join(tmpdir(), "ready-store-"));
  tempDirs.push(storeDir);
  const id = await createCollection(chroma.url, "kept", '{"hnsw":{"space":"l2"}}', '{"k":1}');
  await addRecords(chroma.url, id, makeRecords(40, 8, 3, "kept"));
  await takeSnapshot(new ChromaRest({ url: chroma.url }), withPrefix(fsStorage(storeDir), "chromadb/"));
  for (const name of await listCollectionNames(chroma.url)) await new ChromaRest({ url: chroma.url }).deleteCollection(name);
}, 120_000);

afterAll(async () => {
  for (const p of proxies) p.close();
  await chroma?.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("GET /ready with the startup restore retried", () => {
  it("503 with the restore's last error while Chroma is down (retried, logged at error); 200 once a retry restored the data", async () => {
    const port = await freePort();
    const lines: Line[] = [];
    const running = await start(`http://127.0.0.1:${port}`, lines);
    try {
      // The API listens before the restore is over.
      expect((await fetch(`${running.url}/health`)).status).toBe(200);
      const failing = await until("a failed attempt", async () => {
        const r = await ready(running.url);
        return r.body.reason?.startsWith("startup restore failed, retrying") ? r : undefined;
      });
      expect(failing.status).toBe(503);
      expect(failing.body.ready).toBe(false);
      await until("a second failed attempt", async () => (lines.filter((l) => l.level === "error" && /^STARTUP RESTORE FAILED/.test(l.message)).length >= 2 ? true : undefined));
      expect(running.service.startupRestore.state).toBe("failed");

      await proxy(port, chroma.port); // Chroma comes up
      expect(await running.restored).toBe("done");
      expect(await ready(running.url)).toEqual({ status: 200, body: { ready: true } });
      expect(lines.some((l) => l.message === "startup restore: restored the newest snapshot")).toBe(true);
      expect(await new ChromaRest({ url: chroma.url }).count(await collectionId(chroma.url, "kept"))).toBe(40);
    } finally {
      await running.stop();
    }
  }, 60_000);

  it("POST /restore/skip-startup opens it without the data: logged at warn, the retries stop, /ready then depends on Chroma alone", async () => {
    const port = await freePort();
    const lines: Line[] = [];
    const running = await start(`http://127.0.0.1:${port}`, lines);
    try {
      await until("a failed attempt", async () => (running.service.startupRestore.state === "failed" ? true : undefined));
      const unauthorized = await fetch(`${running.url}/restore/skip-startup`, { method: "POST" });
      expect(unauthorized.status).toBe(401);
      const skip = await fetch(`${running.url}/restore/skip-startup`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
      expect(skip.status).toBe(200);
      expect(await skip.json()).toEqual({ startupRestore: "overridden", was: "failed" });
      expect(await running.restored).toBe("overridden");
      expect(lines.some((l) => l.level === "warn" && /^STARTUP RESTORE SKIPPED BY AN OPERATOR/.test(l.message))).toBe(true);

      const down = await ready(running.url);
      expect(down.status).toBe(503);
      expect(down.body.reason).toMatch(/^Chroma down/);
      const attempts = lines.filter((l) => l.message === "restore").length;
      await proxy(port, chroma.port);
      expect(await ready(running.url)).toEqual({ status: 200, body: { ready: true } });
      await sleep(600); // longer than the longest backoff: no attempt after the override
      expect(lines.filter((l) => l.message === "restore").length).toBe(attempts);

      const again = await fetch(`${running.url}/restore/skip-startup`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
      expect(again.status).toBe(409);
      expect(((await again.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: "conflict", message: "no startup restore is pending (it is overridden)" });
    } finally {
      await running.stop();
    }
  }, 60_000);
});

describe("GET /ready without a startup restore (the Worker's composition)", () => {
  it("is Chroma's heartbeat: 503 'Chroma down' on a closed port, 200 on a live Chroma; no auth", async () => {
    const config = loadConfig({ STORAGE: "memory" });
    const down = compose(config, { storage: memoryStorage(), chromaUrl: `http://127.0.0.1:${await freePort()}`, token: TOKEN, log: () => {} });
    const res = await down.app.request("/ready");
    expect(res.status).toBe(503);
    expect(((await res.json()) as { reason: string }).reason).toMatch(/^Chroma down/);
    const up = compose(config, { storage: memoryStorage(), chromaUrl: chroma.url, token: TOKEN, log: () => {} });
    const ok = await up.app.request("/ready");
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ ready: true });
  });
});
