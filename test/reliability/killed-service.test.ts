/**
 * Issue 12, part 3: a service killed with SIGKILL during its startup restore, on the real
 * `npm start` process tree (npm -> the service -> the embedded Chroma). The embedded Chroma
 * must not outlive it, and the next start on the same DATA_DIR must run exactly one Chroma,
 * sweep the collection the interrupted restore had built aside (logged), and count only the
 * snapshot's records.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { LOCK_FILE } from "../../lib/chroma/data-dir-lock.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { startTestChroma } from "../fixtures/chroma.js";
import { addRecords, createCollection, makeRecords } from "../fixtures/dataset.js";
import { logLines, type LogLine } from "../fixtures/log-lines.js";
import { isChromaOn } from "../../lib/chroma/data-dir-lock.js";
import { findProcesses, processInfo } from "../../lib/chroma/processes.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TOKEN = "killed-service-token";
/** Enough that the restore takes a few seconds, so the kill lands in the middle of it. */
const RECORDS = 8_000;

interface Service {
  child: ChildProcess;
  /** npm, leader of the group the service is in (the embedded Chroma has a group of its own). */
  pgid: number;
  url: string;
  out: () => string;
  logs: () => LogLine[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: () => boolean;
}

const services: Service[] = [];
const tempDirs: string[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `killed-${name}-`));
  tempDirs.push(dir);
  return dir;
}

async function startNpm(env: Record<string, string>): Promise<Service> {
  const port = await freePort();
  const child = spawn("npm", ["start"], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...serviceFreeEnv(), PORT: String(port), HOST: "127.0.0.1", CHROMA_PORT: String(await freePort()), BACKUP_API_TOKEN: TOKEN, IMAGES: "off", ...env },
  });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  let exited = false;
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      exited = true;
      resolve({ code, signal });
    }),
  );
  const service: Service = {
    child,
    pgid: child.pid!,
    url: `http://127.0.0.1:${port}`,
    out: () => out,
    logs: () => logLines(out),
    exit,
    exited: () => exited,
  };
  services.push(service);
  return service;
}

async function until<T>(what: string, service: Service, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    if (service.exited()) throw new Error(`npm start exited while waiting for ${what}:\n${service.out().slice(-3000)}`);
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what}:\n${service.out().slice(-3000)}`);
}

const logLine = (service: Service, message: string, timeoutMs?: number) => until(`log "${message}"`, service, () => service.logs().find((l) => l.message === message), timeoutMs);

/** Alive for this purpose: a zombie runs nothing and holds no port. */
const alive = async (pid: number) => (await processInfo(pid)) !== null;
const parentOf = async (pid: number) => (await processInfo(pid))?.ppid ?? null;
/** Every live Chroma server process (`chroma run --path <dir>`) whose data directory is `dir`. */
const chromaServersOn = async (dir: string) => (await findProcesses((argv) => isChromaOn(argv, dir))).map((p) => p.pid);

let backupDir: string;

beforeAll(async () => {
  backupDir = await tempDir("store");
  const chroma = await startTestChroma();
  try {
    const id = await createCollection(chroma.url, "big", '{"hnsw":{"space":"l2"}}', '{"purpose":"killed-service test"}');
    await addRecords(chroma.url, id, makeRecords(RECORDS, 16, 7, "big"));
    await takeSnapshot(new ChromaRest({ url: chroma.url }), withPrefix(fsStorage(backupDir), "chromadb/"));
  } finally {
    await chroma.close();
  }
}, 120_000);

afterAll(async () => {
  for (const s of services) {
    try {
      process.kill(-s.pgid, "SIGKILL");
    } catch {
      // gone
    }
  }
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("SIGKILL of npm start's service during its startup restore", () => {
  it("the embedded Chroma dies with it; the next start on the same DATA_DIR runs one Chroma, sweeps the partial aside collection and counts only the snapshot", async () => {
    const dataDir = await tempDir("data");
    const chromaDir = join(dataDir, "chroma");
    const env = { DATA_DIR: dataDir, STORAGE: "fs", BACKUP_DIR: backupDir };
    const first = await startNpm(env);
    const chromaUrl = (await logLine(first, "started the embedded Chroma")).url as string;
    const chroma = new ChromaRest({ url: chromaUrl });

    // Wait until the restore has written part of the collection it builds aside.
    const aside = await until("a partly restored aside collection", first, async () => {
      for (const c of await chroma.listCollections().catch(() => [])) {
        if (!/\.restore-/.test(c.name)) continue;
        const records = await chroma.count(c.id).catch(() => 0);
        if (records > 0) return { name: c.name, records };
      }
      return undefined;
    }, 60_000, 50);
    expect(aside.records).toBeLessThan(RECORDS);

    const lock = JSON.parse(await readFile(join(chromaDir, LOCK_FILE), "utf8")) as { pid: number; chroma: { pid: number } | null };
    const servicePid = lock.pid;
    const chromaPid = lock.chroma!.pid;
    expect(await parentOf(servicePid), "the service is npm's child").toBe(first.pgid);
    expect(await parentOf(chromaPid), "Chroma is the service's child").toBe(servicePid);
    expect(await chromaServersOn(chromaDir)).toEqual([chromaPid]);
    expect(first.logs().some((l) => l.message === "startup restore: restored the newest snapshot"), "the kill must land during the restore").toBe(false);

    process.kill(servicePid, "SIGKILL");
    // Polled, bounded: the lifeline ends Chroma when the service's end of its pipe closes.
    const deadline = Date.now() + 10_000;
    while ((await alive(chromaPid)) && Date.now() < deadline) await sleep(50);
    expect(await alive(chromaPid), `the embedded Chroma (pid ${chromaPid}, parent now ${await parentOf(chromaPid)}) outlived the killed service`).toBe(false);
    expect(await chromaServersOn(chromaDir)).toEqual([]);
    await Promise.race([first.exit, sleep(10_000)]);
    expect(first.exited(), "npm start outlived its service").toBe(true);

    // The next start on the same DATA_DIR.
    const second = await startNpm(env);
    const swept = await logLine(second, "deleted collections an interrupted restore had left aside (their data is in the snapshot it was restoring)", 30_000);
    expect(swept).toMatchObject({ level: "warn", collections: [aside.name] });
    expect(swept.records as number).toBeGreaterThanOrEqual(aside.records);
    await logLine(second, "startup restore: restored the newest snapshot", 60_000);
    await until("/ready 200", second, async () => {
      const res = await fetch(`${second.url}/ready`).catch(() => null);
      return res?.status === 200 ? true : undefined;
    });

    const secondLock = JSON.parse(await readFile(join(chromaDir, LOCK_FILE), "utf8")) as { pid: number; chroma: { pid: number } | null };
    expect(await chromaServersOn(chromaDir), "exactly one Chroma on the data directory").toEqual([secondLock.chroma!.pid]);
    expect(await parentOf(secondLock.chroma!.pid)).toBe(secondLock.pid);

    const status = await fetch(`${second.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(status.status).toBe(200);
    const body = (await status.json()) as { chroma: { collections: number; records: number } };
    expect(body.chroma).toMatchObject({ collections: 1, records: RECORDS });
    const secondChroma = new ChromaRest({ url: (second.logs().find((l) => l.message === "started the embedded Chroma")!.url as string) });
    expect((await secondChroma.listCollections()).map((c) => c.name)).toEqual(["big"]);
    console.log(`killed during the restore at ${aside.records} of ${RECORDS} records; the next start swept ${String(swept.records)} aside records`);

    second.child.kill("SIGTERM");
    await Promise.race([second.exit, sleep(20_000)]);
    expect(second.exited()).toBe(true);
  }, 120_000);
});
