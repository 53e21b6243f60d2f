/**
 * `npm start` as a platform runs it: the real process tree (npm -> sh -c "node
 * scripts/build.mjs && exec node ... dist/server.mjs" -> the service -> the embedded
 * Chroma), real ports, real signals. Each service is spawned as its own process group, and
 * every group is killed after the test that owns it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { connect, createServer, type Server } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { startTestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, dumpCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump, type DumpedRecord } from "../snapshot/compare.js";
import { logLines, type LogLine } from "../fixtures/log-lines.js";
import { childPids } from "../fixtures/procfs.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";
import { logLine, until } from "../fixtures/until.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const L2 = '{"hnsw":{"space":"l2"}}';
const COLLECTIONS = [
  { name: "notes", count: 300, seed: 11 },
  { name: "tiny.set", count: 7, seed: 12 },
];

interface Service {
  child: ChildProcess;
  /** The process group: npm is its leader; sh, the service and the embedded Chroma are in it. */
  pgid: number;
  port: number;
  url: string;
  out: () => string;
  logs: () => LogLine[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Survives afterEach (handed to the next test); afterAll kills it regardless. */
  keep: boolean;
}

const services = new Set<Service>();
const tempDirs: string[] = [];

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `runtime-${name}-`));
  tempDirs.push(dir);
  return dir;
}

async function startNpm(env: Record<string, string>, port?: number): Promise<Service> {
  const p = port ?? (await freePort());
  // Never Chroma's fixed 8000: tests run side by side.
  const chromaPort = String(await freePort());
  const child = spawn("npm", ["start"], { cwd: ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...serviceFreeEnv(), PORT: String(p), CHROMA_PORT: chromaPort, ...env } });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const service: Service = {
    child,
    pgid: child.pid!,
    port: p,
    url: `http://127.0.0.1:${p}`,
    out: () => out,
    logs: () => logLines(out),
    exit,
    keep: false,
  };
  services.add(service);
  return service;
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function kill(service: Service): Promise<void> {
  services.delete(service);
  if (groupAlive(service.pgid)) process.kill(-service.pgid, "SIGKILL");
  await Promise.race([service.exit, sleep(5000)]);
}

afterEach(async () => {
  for (const s of [...services]) if (!s.keep) await kill(s);
});

afterAll(async () => {
  for (const s of [...services]) await kill(s);
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));



/** Polls GET /ready; resolves at the first 200 with every 503 reason seen before it. */
const firstReady = (service: Service) => {
  const reasons = new Set<string>();
  return until("GET /ready", service, async () => {
    try {
      const res = await fetch(`${service.url}/ready`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { ready: boolean; reason?: string };
      if (body.reason) reasons.add(body.reason);
      return res.ok ? { body, reasons: [...reasons] } : undefined;
    } catch {
      return undefined;
    }
  });
};

/** Polls GET /health; resolves at the first 200, which the test inspects at once. */
const firstHealthy = (service: Service) =>
  until("GET /health", service, async () => {
    try {
      const res = await fetch(`${service.url}/health`, { signal: AbortSignal.timeout(1000) });
      return res.ok ? ((await res.json()) as { ok: boolean; version: string }) : undefined;
    } catch {
      return undefined;
    }
  });

async function heartbeat(chromaUrl: string): Promise<boolean> {
  try {
    return (await fetch(`${chromaUrl}/api/v2/heartbeat`, { signal: AbortSignal.timeout(1000) })).ok;
  } catch {
    return false;
  }
}

/** Sends SIGTERM to npm alone (as a platform does) and checks the whole tree is gone. */
async function expectStopsOnSigterm(service: Service, chromaUrl: string, alreadySent = false): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const started = Date.now();
  if (!alreadySent) service.child.kill("SIGTERM");
  const exit = await Promise.race([service.exit, sleep(10_000).then(() => null)]);
  const ms = Date.now() - started;
  expect(exit, `npm start still running 10 s after SIGTERM:\n${service.out().slice(-2000)}`).not.toBeNull();
  expect(exit!.code === 0 || exit!.signal !== null, `exit ${JSON.stringify(exit)}`).toBe(true);
  expect(ms).toBeLessThan(8000);
  expect(await heartbeat(chromaUrl), "the embedded Chroma still answers").toBe(false);
  // Nothing of the group (sh, node, the Chroma server) outlives npm.
  for (let i = 0; i < 50 && groupAlive(service.pgid); i++) await sleep(50);
  expect(groupAlive(service.pgid), "a process of the npm start group is still alive").toBe(false);
  return { ...exit!, ms };
}

/** The service process of `npm start` (npm's child: sh exec'd node) with its argv and resident set. */
async function serviceProcess(service: Service): Promise<{ pid: number; argv: string[]; rssMb: number }> {
  const [pid, ...others] = await childPids(service.pgid);
  expect(pid, "npm start has no child process").toBeDefined();
  expect(others, "npm start has more than one child process").toEqual([]);
  const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  return { pid: pid!, argv, rssMb: rssKb / 1024 };
}

async function dumps(url: string): Promise<Map<string, Map<string, DumpedRecord>>> {
  const out = new Map<string, Map<string, DumpedRecord>>();
  for (const name of await listCollectionNames(url)) out.set(name, parseDump(await dumpCollection(url, await collectionId(url, name))));
  return out;
}

function expectSameDumps(before: Map<string, Map<string, DumpedRecord>>, after: Map<string, Map<string, DumpedRecord>>): void {
  expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
  for (const [name, records] of before) expectSameRecords(records, after.get(name)!, false);
}

const snapshotFiles = async (backupDir: string) => (await readdir(join(backupDir, "chromadb", "snapshots"))).filter((f) => f.endsWith(".json")).sort();

let backupDir: string;
let source: Map<string, Map<string, DumpedRecord>>;

beforeAll(async () => {
  // A store holding one snapshot, taken by the engine from a Chroma that is then gone.
  backupDir = await tempDir("store");
  const chroma = await startTestChroma();
  try {
    for (const c of COLLECTIONS) {
      const id = await createCollection(chroma.url, c.name, L2, '{"purpose":"runtime test"}');
      await addRecords(chroma.url, id, makeRecords(c.count, 16, c.seed, c.name));
    }
    source = await dumps(chroma.url);
    await takeSnapshot(new ChromaRest({ url: chroma.url }), withPrefix(fsStorage(backupDir), "chromadb/"));
  } finally {
    await chroma.close();
  }
  expect(await snapshotFiles(backupDir)).toHaveLength(1);
});

describe("npm start with a snapshot in the store (one data dir, started twice)", () => {
  const TOKEN = "runtime-test-token";
  let dataDir: string;
  let first: Service;
  let firstChroma: string;
  let beforeStop: Map<string, Map<string, DumpedRecord>>;

  it("serves the API at once, restores the newest snapshot into an empty data dir, and says ready only then", async () => {
    dataDir = await tempDir("data");
    const started = Date.now();
    first = await startNpm({ DATA_DIR: dataDir, BACKUP_API_TOKEN: TOKEN, STORAGE: "fs", BACKUP_DIR: backupDir });
    first.keep = true;
    const health = await firstHealthy(first);
    expect(health).toMatchObject({ ok: true });
    const ready = await firstReady(first);
    // The first ready answer: Chroma must already hold everything.
    firstChroma = (await logLine(first, "started the embedded Chroma", 1000)).url as string;
    const counts = await Promise.all(COLLECTIONS.map(async (c) => new ChromaRest({ url: firstChroma }).count(await collectionId(firstChroma, c.name))));
    const readyAfterMs = Date.now() - started;
    expect(ready.body).toEqual({ ready: true });
    // Before the API is up, the starting app names the step ("startup restore running: the embedded Chroma is starting").
    for (const reason of ready.reasons) expect(reason).toMatch(/^startup restore running(: .+)?$/);
    expect(counts).toEqual(COLLECTIONS.map((c) => c.count));
    expectSameDumps(source, await dumps(firstChroma));

    const restored = await logLine(first, "startup restore: restored the newest snapshot", 1000);
    expect(restored.collections).toEqual(COLLECTIONS.map((c) => ({ name: c.name, records: c.count })));
    const order = first.logs().map((l) => l.message);
    expect(order.indexOf("chroma-backup is serving")).toBeLessThan(order.indexOf("startup restore: restored the newest snapshot"));
    console.log(`npm start -> first /ready 200 (restore of ${COLLECTIONS.reduce((n, c) => n + c.count, 0)} records done): ${readyAfterMs} ms`);
  }, 45_000);

  it("runs the service as plain node on the compiled bundle, without tsx's loader", async () => {
    expect(first, "needs the service of the previous test").toBeDefined();
    const { argv, rssMb } = await serviceProcess(first);
    // Exactly the start script's `node --enable-source-maps --max-semi-space-size=4 dist/server.mjs`:
    // no --import tsx, no .ts entry, and the young generation capped (the heap's peak follows it).
    expect(argv.slice(1)).toEqual(["--enable-source-maps", "--max-semi-space-size=4", "dist/server.mjs"]);
    expect(argv.join(" ")).not.toMatch(/tsx|\.ts\b/);
    // Stack traces point at the TypeScript sources through the bundle's source map.
    const map = JSON.parse(await readFile(join(ROOT, "dist", "server.mjs.map"), "utf8")) as { sources: string[] };
    expect(map.sources).toContain("../runtime/node.ts");
    // Right after this restore: 77-78 MB here; the same service under `node --import tsx`
    // (a second V8 isolate for the loader, plus esbuild) was 99-103 MB at the same point.
    console.log(`npm start: service process RSS ${rssMb.toFixed(1)} MB`);
    expect(rssMb, "the service's RSS is in the range of tsx's, not of plain node's").toBeLessThan(90);
  });

  it("SIGTERM to npm start stops the service and the embedded Chroma", async () => {
    expect(first, "needs the service of the previous test").toBeDefined();
    // A write after the restore, so the restart below has something the store does not.
    await addRecords(firstChroma, await collectionId(firstChroma, "notes"), makeRecords(1, 16, 99, "added-after-restore"));
    beforeStop = await dumps(firstChroma);
    expect(beforeStop.get("notes")!.size).toBe(301);

    const { code, signal, ms } = await expectStopsOnSigterm(first, firstChroma);
    expect(first.logs().some((l) => l.message === "shutting down" && l.signal === "SIGTERM")).toBe(true);
    await expect(fetch(`${first.url}/health`)).rejects.toThrow();
    console.log(`SIGTERM -> npm start exited (code ${code}, signal ${signal}) in ${ms} ms`);
  }, 30_000);

  it("RESTORE_ON_START=if-empty over a data dir that holds data overwrites nothing", async () => {
    expect(beforeStop, "needs the data dir of the previous tests").toBeDefined();
    const snapshotsBefore = await snapshotFiles(backupDir);
    const second = await startNpm({ DATA_DIR: dataDir, BACKUP_API_TOKEN: TOKEN, STORAGE: "fs", BACKUP_DIR: backupDir, RESTORE_ON_START: "if-empty" });
    await firstReady(second);
    const chromaUrl = (await logLine(second, "started the embedded Chroma", 1000)).url as string;
    expect(chromaUrl).not.toBe(firstChroma); // a new server on the same files
    const after = await dumps(chromaUrl);
    expect(after.get("notes")!.size).toBe(301);
    expectSameDumps(beforeStop, after);

    const skipped = await logLine(second, "startup restore: nothing restored", 1000);
    expect(skipped.reason).toMatch(/already holds records \(collection \S+ has \d+\)/);
    expect(second.logs().some((l) => l.message === "startup restore: restored the newest snapshot")).toBe(false);
    expect(await snapshotFiles(backupDir), "no safety snapshot: nothing was replaced").toEqual(snapshotsBefore);
    await expectStopsOnSigterm(second, chromaUrl);
    // Data the service found on its disk, not from a snapshot, is unprotected: the stop backs it up.
    expect(second.logs().find((l) => l.message === "on-stop backup")).toMatchObject({ outcome: "committed" });
    expect(await snapshotFiles(backupDir)).toHaveLength(snapshotsBefore.length + 1);
  }, 45_000);
});

describe("npm start without BACKUP_API_TOKEN", () => {
  function externalIPv4(): string | null {
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
    return null;
  }

  const refused = (host: string, port: number) =>
    new Promise<boolean>((resolve) => {
      const socket = connect({ host, port });
      socket.setTimeout(2000);
      socket.once("connect", () => (socket.destroy(), resolve(false)));
      socket.once("timeout", () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(true));
    });

  it("generates a token into DATA_DIR/api-token (0600), prints it once, binds 127.0.0.1, and the token works", async () => {
    const dataDir = await tempDir("token");
    const env = { DATA_DIR: dataDir, STORAGE: "fs", BACKUP_DIR: backupDir, RESTORE_ON_START: "never" };
    const service = await startNpm(env);
    await firstHealthy(service);

    const file = join(dataDir, "api-token");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const token = (await readFile(file, "utf8")).trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{32,}$/);
    expect(service.out().split(token).length - 1, "the token is printed exactly once").toBe(1);
    expect((await logLine(service, "generated an API token", 1000)).path).toBe(file);

    const serving = await logLine(service, "chroma-backup is serving", 30_000); // /health answers while Chroma starts
    expect(serving.host).toBe("127.0.0.1");
    const external = externalIPv4();
    if (external) expect(await refused(external, service.port), `the service answers on ${external}`).toBe(true);

    const ok = await fetch(`${service.url}/status`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    const status = (await ok.json()) as { chroma: { reachable: boolean; version: string | null }; storage: { driver: string; snapshots: number } };
    expect(status.chroma.reachable).toBe(true);
    // The embedded Chroma's bindings that started (the version route says "1.0.0" on every server).
    expect(status.chroma.version).toMatch(/^1\.(0\.5|3\.4)$/);
    expect(status.chroma.version).toBe((await logLine(service, "started the embedded Chroma", 1000)).version);
    expect(status.storage).toMatchObject({ driver: "fs", snapshots: 2 }); // the seeded one and the previous test's on-stop backup
    const wrong = await fetch(`${service.url}/status`, { headers: { authorization: "Bearer not-the-token" } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("www-authenticate")).toMatch(/^Bearer/);
    const chromaUrl = (await logLine(service, "started the embedded Chroma", 1000)).url as string;
    await expectStopsOnSigterm(service, chromaUrl);

    // The next start reuses the saved token and does not print it again.
    const again = await startNpm(env);
    await firstHealthy(again);
    expect(again.out()).not.toContain(token);
    expect((await logLine(again, "chroma-backup is serving", 30_000)).host).toBe("127.0.0.1");
    expect((await fetch(`${again.url}/backups`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  }, 45_000);
});

describe("npm start leaves no embedded Chroma behind when it does not get to serve", () => {
  it("SIGTERM during startup or the startup restore stops the embedded Chroma and exits 0", async () => {
    // The store holds a snapshot: the signal lands before the API listens or while the restore runs.
    const service = await startNpm({ DATA_DIR: await tempDir("early"), BACKUP_API_TOKEN: "t", STORAGE: "fs", BACKUP_DIR: backupDir });
    const signalled = new Promise<void>((resolve) => {
      const onData = () => {
        if (!service.out().includes('"started the embedded Chroma"')) return;
        service.child.stdout!.off("data", onData);
        service.child.kill("SIGTERM");
        resolve();
      };
      service.child.stdout!.on("data", onData);
    });
    await Promise.race([signalled, service.exit]);
    expect(service.logs().some((l) => l.message === "startup restore: restored the newest snapshot"), "the signal came after the restore").toBe(false);
    const chromaUrl = (await logLine(service, "started the embedded Chroma", 1000)).url as string;
    const { code } = await expectStopsOnSigterm(service, chromaUrl, true);
    expect(code).toBe(0);
    expect(service.logs().some((l) => l.message === "stopped during startup" || (l.message === "shutting down" && l.signal === "SIGTERM"))).toBe(true);
  }, 30_000);

  it("a port already in use: logs the failure and exits 1 before starting the embedded Chroma", async () => {
    const blocker: Server = createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => blocker.listen(port, "127.0.0.1", resolve));
    try {
      const service = await startNpm({ DATA_DIR: await tempDir("busy"), BACKUP_API_TOKEN: "t", HOST: "127.0.0.1", STORAGE: "fs", BACKUP_DIR: backupDir, RESTORE_ON_START: "never" }, port);
      const exit = await Promise.race([service.exit, sleep(30_000).then(() => null)]);
      expect(exit, service.out()).toEqual({ code: 1, signal: null });
      const failed = service.logs().find((l) => l.message === "chroma-backup failed to start");
      expect(failed?.error).toMatch(/EADDRINUSE/);
      // The port is taken before Chroma would start (an image download would be wasted otherwise).
      expect(service.logs().some((l) => l.message === "started the embedded Chroma"), "Chroma was started").toBe(false);
      expect(groupAlive(service.pgid)).toBe(false);
    } finally {
      blocker.close();
    }
  }, 45_000);
});
