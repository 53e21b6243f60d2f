/**
 * `chroma-backup run -- CMD` as a real process tree: bin/chroma-backup.js -> the service
 * (and the embedded Chroma, or a test Chroma through CHROMA_URL) -> CMD. Exit codes, CMD's
 * environment, signals passed on, and the example app finding its data after a redeploy.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { buildDist } from "../../scripts/build.mjs";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "chroma-backup.js");
const TOKEN = "run-test-token";

interface Run {
  child: ChildProcess;
  out: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  dataDir: string;
  port: number;
}

const tempDirs: string[] = [];
const children = new Set<ChildProcess>();
let chroma: TestChroma;

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `run-${name}-`));
  tempDirs.push(dir);
  return dir;
}

async function startRun(command: string[], env: Record<string, string>, options: { npm?: boolean; dataDir?: string } = {}): Promise<Run> {
  const dataDir = options.dataDir ?? (await tempDir("data"));
  const port = await freePort();
  const full = { ...serviceFreeEnv(), DATA_DIR: dataDir, PORT: String(port), HOST: "127.0.0.1", BACKUP_API_TOKEN: TOKEN, STORAGE: "fs", BACKUP_DIR: join(dataDir, "store"), ...env };
  const child = options.npm
    ? spawn("npm", ["start", "--", ...command], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: full })
    : spawn(process.execPath, [BIN, "run", "--", ...command], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: full });
  children.add(child);
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, out: () => out, exit, dataDir, port };
}

async function exitOf(run: Run, timeoutMs = 60_000): Promise<number | null> {
  const result = await Promise.race([run.exit, new Promise<null>((r) => setTimeout(() => r(null), timeoutMs))]);
  expect(result, `run still running after ${timeoutMs} ms:\n${run.out().slice(-3000)}`).not.toBeNull();
  return result!.code;
}

async function heartbeat(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/api/v2/heartbeat`, { signal: AbortSignal.timeout(1000) })).ok;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  // The CLI then runs its bundle, as an installed package does (and starts faster than under tsx).
  await buildDist();
  chroma = await startTestChroma();
}, 120_000);

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await chroma?.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("run -- CMD with the embedded Chroma", () => {
  it("starts CMD once ready, with CHROMA_URL/HOST/PORT, BACKUP_URL and BACKUP_API_TOKEN; exits with CMD's code and stops Chroma", async () => {
    const chromaPort = await freePort();
    const out = join(await tempDir("env"), "env.json");
    const script = `
      const e = process.env;
      const ready = await fetch(e.BACKUP_URL + "/ready").then(async (r) => ({ status: r.status, body: await r.json() }));
      const status = await fetch(e.BACKUP_URL + "/status", { headers: { authorization: "Bearer " + e.BACKUP_API_TOKEN } }).then((r) => r.status);
      const heartbeat = await fetch(e.CHROMA_URL + "/api/v2/heartbeat").then((r) => r.status);
      require("node:fs").writeFileSync(${JSON.stringify(out)}, JSON.stringify({ CHROMA_URL: e.CHROMA_URL, CHROMA_HOST: e.CHROMA_HOST, CHROMA_PORT: e.CHROMA_PORT, BACKUP_URL: e.BACKUP_URL, BACKUP_API_TOKEN: e.BACKUP_API_TOKEN, ready, status, heartbeat }));
      process.exit(3);`;
    const run = await startRun(["node", "-e", `(async () => {${script}})()`], { CHROMA_PORT: String(chromaPort) });
    expect(await exitOf(run), run.out()).toBe(3);
    const seen = JSON.parse(await readFile(out, "utf8")) as Record<string, unknown>;
    expect(seen).toEqual({
      CHROMA_URL: `http://127.0.0.1:${chromaPort}`,
      CHROMA_HOST: "127.0.0.1",
      CHROMA_PORT: String(chromaPort),
      BACKUP_URL: `http://127.0.0.1:${run.port}`,
      BACKUP_API_TOKEN: TOKEN,
      ready: { status: 200, body: { ready: true } },
      status: 200,
      heartbeat: 200,
    });
    expect(await heartbeat(`http://127.0.0.1:${chromaPort}`), "the embedded Chroma outlived run").toBe(false);
    expect(existsSync(join(run.dataDir, "service.json")), "service.json left behind").toBe(false);
  }, 60_000);

  it("the example app adds its documents; after a backup, a fresh data dir gets them back before the app starts", async () => {
    const store = await tempDir("store");
    const first = await startRun(["sh", "-c", `node examples/node-app/app.js && node -e 'fetch(process.env.BACKUP_URL + "/backups", { method: "POST", headers: { authorization: "Bearer " + process.env.BACKUP_API_TOKEN } }).then((r) => process.exit(r.status === 201 || r.status === 200 ? 0 : 9))'`], { CHROMA_PORT: String(await freePort()), BACKUP_DIR: store });
    expect(await exitOf(first), first.out()).toBe(0);
    expect(first.out()).toContain('node-app: 3 of 3 documents in "notes" (added 3 now)');

    // A fresh data dir without the store: the app finds nothing and says so with its exit code.
    const empty = await startRun(["node", "examples/node-app/app.js"], { CHROMA_PORT: String(await freePort()), EXAMPLE_EXPECT_DATA: "1" });
    expect(await exitOf(empty), empty.out()).toBe(1);
    expect(empty.out()).toContain("node-app: 3 of 3 documents are missing");

    // The redeploy: a fresh data dir over the same store; the restore is done before the app starts.
    const redeploy = await startRun(["node", "examples/node-app/app.js"], { CHROMA_PORT: String(await freePort()), BACKUP_DIR: store, EXAMPLE_EXPECT_DATA: "1" });
    expect(await exitOf(redeploy), redeploy.out()).toBe(0);
    expect(redeploy.out()).toContain('node-app: 3 of 3 documents in "notes" (added 0 now)');
    const order = redeploy.out().split("\n");
    const restoredAt = order.findIndex((l) => l.includes('"startup restore: restored the newest snapshot"'));
    const appAt = order.findIndex((l) => l.includes('"started the app"'));
    expect(restoredAt).toBeGreaterThanOrEqual(0);
    expect(appAt).toBeGreaterThan(restoredAt);
  }, 120_000);
});

describe("run -- CMD over CHROMA_URL", () => {
  const env = () => ({ CHROMA_URL: chroma.url, RESTORE_ON_START: "never" });

  it("a command that does not exist: exit 127 with a clear message", async () => {
    const run = await startRun(["no-such-command-for-chroma-backup", "x"], env());
    expect(await exitOf(run), run.out()).toBe(127);
    expect(run.out()).toContain('chroma-backup run: cannot start "no-such-command-for-chroma-backup": not found');
    expect(existsSync(join(run.dataDir, "service.json"))).toBe(false);
  }, 60_000);

  it("CMD killed by a signal: exit 128 + n", async () => {
    const run = await startRun(["node", "-e", 'process.kill(process.pid, "SIGKILL")'], env());
    expect(await exitOf(run), run.out()).toBe(128 + 9);
  }, 60_000);

  it("SIGTERM to run is passed on to CMD, which exits on its own terms; run exits with its code", async () => {
    const marks = join(await tempDir("sigterm"), "marks");
    const script = `
      const fs = require("node:fs");
      process.on("SIGTERM", () => { fs.appendFileSync(${JSON.stringify(marks)}, "got SIGTERM\\n"); process.exit(42); });
      fs.appendFileSync(${JSON.stringify(marks)}, "started\\n");
      setInterval(() => {}, 1000);`;
    const run = await startRun(["node", "-e", script], env());
    const deadline = Date.now() + 30_000;
    while (!existsSync(marks) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(marks), run.out()).toBe(true);
    run.child.kill("SIGTERM");
    expect(await exitOf(run), run.out()).toBe(42);
    expect(await readFile(marks, "utf8")).toBe("started\ngot SIGTERM\n");
    expect(run.out()).toContain('"passing a signal on to the app"');
  }, 60_000);

  it("npm start -- CMD is the same", async () => {
    const run = await startRun(["node", "-e", "process.exit(5)"], env(), { npm: true });
    expect(await exitOf(run), run.out()).toBe(5);
    expect(run.out()).toContain('"started the app"');
  }, 60_000);
});
