/**
 * `chroma-backup run -- node notes-app.mjs` end to end, as a user runs it next to an app:
 * the real process tree (bin/chroma-backup.js -> the service -> the embedded Chroma behind
 * the gate, and the app), a long-running app that talks to Chroma with the official client
 * through CHROMA_URL, and the store on s3rver, stopped and started again on the same port and
 * directory. No test here calls the backup API to protect data: the service does it alone.
 * (`run`'s exit codes are in run.test.ts.)
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { LOCK_FILE } from "../../lib/chroma/data-dir-lock.js";
import { LAUNCHER_SCRIPT } from "../../lib/chroma/launcher.js";
import { s3Storage } from "../../lib/storage/s3.js";
import { buildDist } from "../../scripts/build.mjs";
import { startS3rver, type TestS3rver } from "../fixtures/s3rver.js";
import { logLines, type LogLine } from "../fixtures/log-lines.js";
import { childPids } from "../fixtures/procfs.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "chroma-backup.js");
const APP = join(ROOT, "test", "fixtures", "notes-app.mjs");
const TOKEN = "app-e2e-token";
const BUCKET = "app-e2e";

interface Run {
  child: ChildProcess;
  out: () => string;
  logs: () => LogLine[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: () => boolean;
  dataDir: string;
  url: string;
  chromaPort: number;
  app: string;
}

const runs = new Set<Run>();
const tempDirs: string[] = [];
let s3: TestS3rver | null = null;
let s3Port: number;
let s3Dir: string;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `app-e2e-${name}-`));
  tempDirs.push(dir);
  return dir;
}

const endpoint = () => `http://127.0.0.1:${s3Port}`;

/** `chroma-backup run -- node notes-app.mjs` on a fresh DATA_DIR over the s3rver store; its own process group. */
async function startRun(env: Record<string, string> = {}): Promise<Run> {
  const dataDir = await tempDir("data");
  const port = await freePort();
  const chromaPort = await freePort(); // never Chroma's fixed 8000: tests run side by side
  const appPort = await freePort();
  const child = spawn(process.execPath, [BIN, "run", "--", process.execPath, APP], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...serviceFreeEnv(),
      DATA_DIR: dataDir,
      PORT: String(port),
      HOST: "127.0.0.1",
      CHROMA_PORT: String(chromaPort),
      APP_PORT: String(appPort),
      BACKUP_API_TOKEN: TOKEN,
      STORAGE: "s3",
      S3_ENDPOINT: endpoint(),
      S3_BUCKET: BUCKET,
      S3_ACCESS_KEY_ID: "S3RVER",
      S3_SECRET_ACCESS_KEY: "S3RVER",
      S3_FORCE_PATH_STYLE: "true",
      ...env,
    },
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
  const run: Run = {
    child,
    out: () => out,
    logs: () => logLines(out),
    exit,
    exited: () => exited,
    dataDir,
    url: `http://127.0.0.1:${port}`,
    chromaPort,
    app: `http://127.0.0.1:${appPort}`,
  };
  runs.add(run);
  return run;
}

async function until<T>(what: string, run: Run, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    if (run.exited()) throw new Error(`run exited while waiting for ${what}:\n${run.out().slice(-4000)}`);
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what}:\n${run.out().slice(-4000)}`);
}

const logLine = (run: Run, message: string | RegExp, timeoutMs?: number) =>
  until(`log "${String(message)}"`, run, () => run.logs().find((l) => (typeof message === "string" ? l.message === message : message.test(l.message))), timeoutMs);

/** The app's first read of the "notes" collection (printed once, at its start), once the app also listens. */
const firstRead = (run: Run, timeoutMs = 30_000) =>
  until("the app's first read", run, () => {
    const m = /notes-app: first read (.*)/.exec(run.out());
    return m && run.out().includes("notes-app: listening") ? (JSON.parse(m[1]!) as { ids: string[] }).ids : undefined;
  }, timeoutMs);

async function appCall(run: Run, path: string, method = "GET"): Promise<{ status: number; body: { ids?: string[]; error?: string } }> {
  const res = await fetch(`${run.app}${path}`, { method, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: (await res.json()) as { ids?: string[]; error?: string } };
}

async function ready(run: Run): Promise<{ status: number; body: { ready: boolean; reason?: string } } | null> {
  try {
    const res = await fetch(`${run.url}/ready`, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: (await res.json()) as { ready: boolean; reason?: string } };
  } catch {
    return null;
  }
}

/** What a client meets at host:port: "refused", or "open" when something accepts the connection. */
const probePort = (port: number) =>
  new Promise<"refused" | "open" | string>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.setTimeout(2000);
    socket.once("connect", () => (socket.destroy(), resolve("open")));
    socket.once("timeout", () => (socket.destroy(), resolve("timeout")));
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED" ? "refused" : String(err.code)));
  });

/** The snapshot manifests in the store, read from s3rver directly. */
async function manifests(): Promise<string[]> {
  const store = s3Storage({ endpoint: endpoint(), bucket: BUCKET, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", forcePathStyle: true });
  const keys: string[] = [];
  for await (const o of store.list("chromadb/snapshots/")) if (o.key.endsWith(".json")) keys.push(o.key);
  return keys.sort();
}

/** SIGTERM to run (as a platform stops it); resolves with its exit. */
async function stopRun(run: Run): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  run.child.kill("SIGTERM");
  const exit = await Promise.race([run.exit, sleep(45_000).then(() => null)]);
  expect(exit, `run still running 45 s after SIGTERM:\n${run.out().slice(-3000)}`).not.toBeNull();
  runs.delete(run);
  return exit!;
}

const cmdline = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return "";
  }
};

beforeAll(async () => {
  await buildDist(); // the CLI runs its bundle, as an installed package does
  s3Port = await freePort();
  s3Dir = await tempDir("s3rver");
  s3 = await startS3rver([BUCKET], { port: s3Port, directory: s3Dir });
}, 120_000);

afterAll(async () => {
  for (const run of runs) {
    try {
      process.kill(-run.child.pid!, "SIGKILL");
    } catch {
      // gone
    }
  }
  await s3?.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("run -- a long-running app, with the store on s3rver", () => {
  const first = Array.from({ length: 5 }, (_, i) => `a-${i}`);
  const beforeStop = Array.from({ length: 3 }, (_, i) => `b-${i}`);
  const all = [...first, ...beforeStop].sort();

  it("the app adds records; an automatic backup protects them without any API call; unchanged data commits no new snapshot", async () => {
    const run = await startRun({ BACKUP_INTERVAL: "2s" });
    expect(await firstRead(run), run.out()).toEqual([]);
    expect(await manifests()).toEqual([]);

    expect(await appCall(run, "/add?prefix=a&n=5", "POST")).toEqual({ status: 200, body: { ids: first } });
    const committed = await logLine(run, "interval backup committed", 20_000);
    expect(committed).toMatchObject({ trigger: "interval", records: 5 });
    expect(await manifests()).toHaveLength(1);

    // Several intervals of reads only: no new snapshot.
    for (let i = 0; i < 6; i++) {
      expect((await appCall(run, "/ids")).body.ids).toEqual(first);
      await sleep(1000);
    }
    expect(await manifests(), "unchanged data committed a snapshot").toHaveLength(1);
    expect(run.logs().filter((l) => /^(interval|scheduled) backup committed/.test(l.message))).toHaveLength(1);

    // Nothing changed since that backup: the stop has nothing to protect.
    expect(await stopRun(run)).toEqual({ code: 0, signal: null });
    expect(run.logs().find((l) => l.message === "on-stop backup")).toMatchObject({ outcome: "nothing-to-protect" });
    expect(await manifests()).toHaveLength(1);
  }, 60_000);

  it("a redeploy (fresh DATA_DIR, same store): the app's first read sees every record; records added right before SIGTERM are in the on-stop backup", async () => {
    // No interval backup can take them first: only the stop protects them.
    const run = await startRun({ BACKUP_INTERVAL: "1h" });
    expect(await firstRead(run), run.out()).toEqual(first);
    expect(await appCall(run, "/add?prefix=b&n=3", "POST")).toEqual({ status: 200, body: { ids: beforeStop } });
    expect(await stopRun(run)).toEqual({ code: 0, signal: null });
    expect(run.logs().find((l) => l.message === "on-stop backup"), run.out()).toMatchObject({ outcome: "committed" });
    expect(await manifests()).toHaveLength(2);

    const again = await startRun({ BACKUP_INTERVAL: "1h" });
    expect(await firstRead(again), again.out()).toEqual(all);
    expect(await stopRun(again)).toEqual({ code: 0, signal: null });
    expect(again.logs().find((l) => l.message === "on-stop backup")).toMatchObject({ outcome: "nothing-to-protect" });
    expect(await manifests()).toHaveLength(2);
  }, 60_000);

  describe("the store down at startup, then the embedded Chroma killed", () => {
    let run: Run;

    it("Chroma refuses connections and /ready says why until the retried restore succeeds; automatic backups are held meanwhile; then the app sees the data", async () => {
      await s3!.close();
      s3 = null;
      run = await startRun({ BACKUP_INTERVAL: "2s" });
      const failing = await until("/ready 503 with a failed restore", run, async () => {
        const r = await ready(run);
        return r?.body.reason?.startsWith("startup restore failed, retrying") ? r : undefined;
      });
      expect(failing.status).toBe(503);
      expect(failing.body.ready).toBe(false);
      expect(failing.body.reason).toMatch(/127\.0\.0\.1|ECONNREFUSED|storage|s3/i);
      expect(await probePort(run.chromaPort), "the gate must not listen before the restore").toBe("refused");
      expect(run.out()).not.toContain("notes-app:");
      expect(run.logs().some((l) => l.message === "started the app")).toBe(false);

      const post = (body: unknown) => fetch(`${run.url}/backups`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(body) });
      const held = await post({ ifOlderThan: "1s" });
      expect(held.status).toBe(409);
      expect(((await held.json()) as { error: { code: string } }).error.code).toBe("restore_pending");
      // A plain backup is an operator's decision: not held, it goes to the store (down here).
      const plain = await post({});
      const plainBody = (await plain.json()) as { error: { code: string } };
      expect(plainBody.error.code, JSON.stringify(plainBody)).not.toBe("restore_pending");
      expect(plain.status).toBe(503);
      expect(plainBody.error.code).toBe("storage_unavailable");
      await logLine(run, /^STARTUP RESTORE FAILED/);
      expect(await probePort(run.chromaPort)).toBe("refused");

      // The store comes back on the same port and directory.
      s3 = await startS3rver([BUCKET], { port: s3Port, directory: s3Dir });
      expect(await firstRead(run, 90_000), run.out()).toEqual(all);
      expect(run.logs().find((l) => l.message === "startup restore: restored the newest snapshot")).toBeDefined();
      expect(await ready(run)).toEqual({ status: 200, body: { ready: true } });
      expect(await manifests(), "a held backup committed something").toHaveLength(2);
    }, 120_000);

    it("kill -9 of the embedded Chroma: logged at error, /ready 503 meanwhile, restarted, and the app reads its data again through the gate", async () => {
      expect(run, "needs the service of the previous test").toBeDefined();
      const lock = JSON.parse(await readFile(join(run.dataDir, "chroma", LOCK_FILE), "utf8")) as { pid: number; chroma: { pid: number } | null };
      const chromaPid = lock.chroma!.pid;
      // The lock names the service (run itself: it serves in-process) and its Chroma, a child of it.
      expect(lock.pid).toBe(run.child.pid);
      expect(await childPids(lock.pid)).toContain(chromaPid);
      expect(cmdline(chromaPid)).toContain(`${LAUNCHER_SCRIPT} -- run --path`);

      process.kill(chromaPid, "SIGKILL");
      const down = await until("/ready 503 while Chroma is down", run, async () => {
        const r = await ready(run);
        return r && r.status === 503 ? r : undefined;
      }, 10_000, 10);
      expect(down.body.reason).toMatch(/embedded Chroma is down|Chroma down/);
      const exited = await logLine(run, "the embedded Chroma exited unexpectedly", 5000);
      expect(exited).toMatchObject({ level: "error", pid: chromaPid, signal: "SIGKILL" });

      await logLine(run, "restarted the embedded Chroma", 30_000);
      await until("/ready 200", run, async () => ((await ready(run))?.status === 200 ? true : undefined));
      const after = JSON.parse(await readFile(join(run.dataDir, "chroma", LOCK_FILE), "utf8")) as { chroma: { pid: number } | null };
      expect(after.chroma!.pid).not.toBe(chromaPid);
      expect(await childPids(lock.pid)).toContain(after.chroma!.pid);
      expect(await appCall(run, "/ids")).toEqual({ status: 200, body: { ids: all } });

      expect(await stopRun(run)).toEqual({ code: 0, signal: null });
      expect(await manifests()).toHaveLength(2);
    }, 60_000);
  });
});
