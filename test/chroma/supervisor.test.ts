/**
 * The embedded Chroma's lifecycle on real process trees: it dies with its service (even
 * by SIGKILL), one data directory never runs two, and an unexpected exit is logged and
 * restarted.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, expect, it } from "vitest";
import { DataDirInUseError, isChromaOn, LOCK_FILE } from "../../lib/chroma/data-dir-lock.js";
import { freePort, startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { findProcesses, processInfo } from "../../lib/chroma/processes.js";
import type { LogFields, Logger, LogLevel } from "../../lib/log.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const dirs: string[] = [];
const children = new Set<ChildProcess>();
const running = new Set<EmbeddedChroma>();

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "chroma-supervisor-"));
  dirs.push(dir);
  return dir;
}

function recordingLogger(): { log: Logger; lines: { level: LogLevel; message: string; fields: LogFields }[] } {
  const lines: { level: LogLevel; message: string; fields: LogFields }[] = [];
  return { log: (level, message, fields = {}) => lines.push({ level, message, fields }), lines };
}

async function start(options: Parameters<typeof startEmbeddedChroma>[0]): Promise<EmbeddedChroma> {
  const chroma = await startEmbeddedChroma(options);
  running.add(chroma);
  return chroma;
}

/** Runs test/chroma/embedded-child.ts (a service stand-in) on `dataDir`; resolves with what it printed. */
async function startChild(dataDir: string): Promise<{ child: ChildProcess; pid: number; chromaPid: number; url: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "test/chroma/embedded-child.ts", dataDir], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let out = "";
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) resolve({ child, ...(JSON.parse(line) as { pid: number; chromaPid: number; url: string }) });
    });
    child.once("exit", (code, signal) => reject(new Error(`the child exited (${code ?? signal}): ${out}`)));
  });
}

async function gone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  // process.kill(pid, 0) answers for a zombie too (exited, not yet reaped by init): processInfo does not.
  while (await processInfo(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

const chromasOn = (dataDir: string) => findProcesses((argv) => isChromaOn(argv, dataDir));

afterEach(async () => {
  for (const c of running) await c.stop();
  running.clear();
  for (const child of children) child.kill("SIGKILL");
  children.clear();
});
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

it("a SIGKILLed service takes its Chroma with it; its directory is refused while it lives and starts cleanly after", async () => {
  const dataDir = await tempDir();
  const service = await startChild(dataDir);
  expect(await processInfo(service.chromaPid), "the Chroma the child started").not.toBeNull();
  expect((await fetch(`${service.url}/api/v2/heartbeat`)).ok).toBe(true);

  // While the service lives: a second start on its directory is refused, naming it.
  const refused = await startEmbeddedChroma({ dataDir }).then(
    (c) => (running.add(c), null),
    (err: unknown) => err,
  );
  expect(refused).toBeInstanceOf(DataDirInUseError);
  expect((refused as Error).message).toContain(`pid ${service.pid}`);
  expect(await chromasOn(dataDir)).toHaveLength(1);

  service.child.kill("SIGKILL");
  expect(await gone(service.pid, 5000), "the service").toBe(true);
  expect(await gone(service.chromaPid, 5000), "its Chroma died with it").toBe(true);
  expect(await fetch(`${service.url}/api/v2/heartbeat`).then(() => "answered", () => "refused")).toBe("refused");

  // The lock file it left is stale: replaced, and exactly one Chroma runs on the directory.
  const { log, lines } = recordingLogger();
  const next = await start({ dataDir, log });
  const record = JSON.parse(await readFile(join(dataDir, LOCK_FILE), "utf8")) as { pid: number; chroma: { pid: number } };
  expect(record.pid).toBe(process.pid);
  expect(record.chroma.pid).toBe(next.pid);
  expect(lines.some((l) => l.message === "replacing a stale lock file" && l.fields.pid === service.pid)).toBe(true);
  expect((await chromasOn(dataDir)).map((p) => p.pid)).toEqual([next.pid]);
  await next.stop();
  await expect(readFile(join(dataDir, LOCK_FILE)), "stop removes the lock file").rejects.toThrow(/ENOENT/);
});

it("a stale lock file (its process is gone) is replaced; one naming this live process is refused", async () => {
  const dataDir = await tempDir();
  const dead = spawn(process.execPath, ["-e", ""]);
  await new Promise((r) => dead.once("exit", r));
  await writeFile(join(dataDir, LOCK_FILE), JSON.stringify({ pid: dead.pid, startTicks: 1, chroma: null, port: 1, since: "then" }));
  const chroma = await start({ dataDir });
  expect(chroma.up).toBe(true);
  expect((JSON.parse(await readFile(join(dataDir, LOCK_FILE), "utf8")) as { pid: number }).pid).toBe(process.pid);

  const again = await startEmbeddedChroma({ dataDir }).then(
    (c) => (running.add(c), null),
    (err: unknown) => err,
  );
  expect(again).toBeInstanceOf(DataDirInUseError);
  expect((again as Error).message).toContain(`this process (pid ${process.pid}`);
});

it("a Chroma orphaned on the directory (its parent gone, no lock file) is killed at start, logged", async () => {
  const dataDir = await tempDir();
  const port = await freePort();
  const cli = join(dirname(createRequire(import.meta.url).resolve("chromadb")), "..", "cli.mjs");
  // sh starts Chroma in the background and exits: Chroma's parent becomes init.
  const sh = spawn("sh", ["-c", `"${process.execPath}" "${cli}" run --path "${dataDir}" --port ${port} >/dev/null 2>&1 & echo $!`]);
  let out = "";
  sh.stdout.on("data", (b: Buffer) => (out += b.toString()));
  await new Promise((r) => sh.once("exit", r));
  const orphan = Number(out.trim());
  try {
    const deadline = Date.now() + 30_000;
    while (!(await fetch(`http://127.0.0.1:${port}/api/v2/heartbeat`).then((r) => r.ok, () => false))) {
      if (Date.now() > deadline) throw new Error("the orphan Chroma did not come up");
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await processInfo(orphan))?.ppid).toBe(1);

    const { log, lines } = recordingLogger();
    const chroma = await start({ dataDir, log });
    expect(await gone(orphan, 1000)).toBe(true);
    expect(lines.find((l) => l.message === "killing an orphaned Chroma running on the data directory")?.fields.pid).toBe(orphan);
    expect((await chromasOn(dataDir)).map((p) => p.pid)).toEqual([chroma.pid]);
  } finally {
    try {
      process.kill(orphan, "SIGKILL");
    } catch {
      // gone
    }
  }
});

it("a Chroma server killed directly is logged at error level and restarted on the same port; up goes false then true", async () => {
  const dataDir = await tempDir();
  const { log, lines } = recordingLogger();
  const chroma = await start({ dataDir, log, backoff: { initialMs: 200 } });
  const events: [boolean, string][] = [];
  chroma.onStateChange((up, reason) => events.push([up, reason]));
  const collection = await fetch(`${chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "kept" }),
  });
  expect(collection.ok).toBe(true);

  const first = chroma.pid!;
  process.kill(first, "SIGKILL");
  await expect.poll(() => chroma.up, { timeout: 5000 }).toBe(false);
  await chroma.waitUp(30_000);
  expect(chroma.up).toBe(true);
  expect(chroma.pid).not.toBe(first);
  expect(events).toEqual([
    [false, "exited (signal SIGKILL)"],
    [true, "restarted"],
  ]);
  const error = lines.find((l) => l.level === "error");
  expect(error?.message).toBe("the embedded Chroma exited unexpectedly");
  expect(error?.fields).toMatchObject({ pid: first, signal: "SIGKILL", code: null });
  expect(error?.fields.lastOutput).toEqual(expect.arrayContaining([expect.stringContaining("Saving data to: ")]));
  // Same port, same data.
  const names = (await (await fetch(`${chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections`)).json()) as { name: string }[];
  expect(names.map((c) => c.name)).toEqual(["kept"]);
  expect((JSON.parse(await readFile(join(dataDir, LOCK_FILE), "utf8")) as { chroma: { pid: number } }).chroma.pid).toBe(chroma.pid);

  // Each quick exit waits longer before the next start.
  process.kill(chroma.pid!, "SIGKILL");
  await expect.poll(() => chroma.up, { timeout: 5000 }).toBe(false);
  await chroma.waitUp(30_000);
  const delays = lines.filter((l) => l.message === "restarting the embedded Chroma").map((l) => l.fields.inMs);
  expect(delays).toEqual([200, 400]);

  await chroma.stop();
  expect(chroma.up).toBe(false);
  expect(events.at(-1)).toEqual([false, "stopped"]);
  await expect(chroma.waitUp(1000)).rejects.toThrow(/stopped/);
  expect(lines.filter((l) => l.level === "error")).toHaveLength(2); // the two kills; a stop is no error
});
