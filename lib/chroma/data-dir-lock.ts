import { open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { BackupError } from "../errors.js";
import type { Logger } from "../log.js";
import { findProcesses, killAndWait, processInfo, stillRunning, type ProcessInfo } from "./processes.js";
import { LAUNCHER_SCRIPT } from "./launcher.js";

/** The lock file, in the Chroma data directory itself. */
export const LOCK_FILE = ".chroma-backup.pid";

/** Another live process runs (or supervises) a Chroma on this data directory. */
export class DataDirInUseError extends BackupError {
  override name = "DataDirInUseError";
  constructor(
    message: string,
    readonly pid: number,
  ) {
    super(message, { pid });
  }
}

interface LockRecord {
  /** The process that owns the directory (the service), and its start time. */
  pid: number;
  startTicks: number | null;
  /** The Chroma server it runs, while it runs one. */
  chroma: { pid: number; startTicks: number | null } | null;
  port: number | null;
  since: string;
}

export interface DataDirLock {
  readonly path: string;
  /** Records the Chroma server now running on the directory (null: none). */
  setChroma(pid: number | null, port: number): Promise<void>;
  /** Removes the lock file if it is still ours. */
  release(): Promise<void>;
}

/** True when `argv` is `chroma run --path <dataDir>` through ./launcher.ts (or, from earlier versions, chromadb's cli.mjs): a Chroma of ours on this dir. */
export function isChromaOn(argv: string[], dataDir: string): boolean {
  const at = argv.indexOf("--path");
  return at > 0 && argv.includes("run") && argv.some((a) => a === LAUNCHER_SCRIPT || a.endsWith("cli.mjs")) && resolve(argv[at + 1] ?? "") === resolve(dataDir);
}

async function readRecord(path: string): Promise<LockRecord | null> {
  try {
    const parsed = JSON.parse(await readFile(path, "utf8")) as Partial<LockRecord>;
    return typeof parsed.pid === "number" ? ({ startTicks: null, chroma: null, port: null, since: "?", ...parsed } as LockRecord) : null;
  } catch {
    return null; // absent, torn or not ours: stale either way
  }
}

/**
 * Takes the data directory for this process, so that two services (or a service and the
 * CLI) never run two Chromas on one directory:
 * - the file names a live process (same pid and start time): refused, naming that pid;
 * - it names a dead one (a service that was killed): the file is stale; a Chroma it left
 *   running on the directory (an orphan) is killed, logged, and the file replaced;
 * - a Chroma runs on the directory without a file (started by something else): its
 *   parent, if alive, is named and the start refused; an orphan (parent gone) is killed.
 */
export async function lockDataDir(dataDir: string, log: Logger): Promise<DataDirLock> {
  const path = join(dataDir, LOCK_FILE);
  const me = await processInfo(process.pid);
  for (let attempt = 0; ; attempt++) {
    const record = await readRecord(path);
    if (record) await clearStale(record, path, dataDir, log);
    await clearUnrecordedChromas(dataDir, record, log);
    const mine: LockRecord = { pid: process.pid, startTicks: me?.startTicks ?? null, chroma: null, port: null, since: new Date().toISOString() };
    try {
      const file = await open(path, "wx", 0o644);
      try {
        await file.writeFile(JSON.stringify(mine) + "\n");
      } finally {
        await file.close();
      }
      return handle(path, mine);
    } catch (err) {
      // Another start took it between our check and our create: look again (it is live now).
      if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt >= 2) throw err;
    }
  }
}

async function clearStale(record: LockRecord, path: string, dataDir: string, log: Logger): Promise<void> {
  if (await stillRunning(record)) {
    const who = record.pid === process.pid ? "this process" : `process ${record.pid}`;
    throw new DataDirInUseError(
      `the Chroma data directory ${dataDir} is in use by ${who} (pid ${record.pid}, since ${record.since}${record.port ? `, Chroma on port ${record.port}` : ""}): ` +
        `stop that service first, or talk to it instead of starting a second Chroma (the CLI's --url)`,
      record.pid,
    );
  }
  if (record.chroma && (await stillRunning(record.chroma))) {
    const info = await processInfo(record.chroma.pid);
    if (info?.argv && isChromaOn(info.argv, dataDir)) {
      log("warn", "killing a Chroma left running by a service that was killed", { pid: record.chroma.pid, service: record.pid, dataDir });
      if (!(await killAndWait(record.chroma))) throw new DataDirInUseError(`could not stop the orphaned Chroma (pid ${record.chroma.pid}) on ${dataDir}`, record.chroma.pid);
    }
  }
  log("info", "replacing a stale lock file", { path, pid: record.pid });
  await rm(path, { force: true });
}

async function clearUnrecordedChromas(dataDir: string, record: LockRecord | null, log: Logger): Promise<void> {
  const running = await findProcesses((argv) => isChromaOn(argv, dataDir));
  for (const chroma of running) {
    const parent: ProcessInfo | null = chroma.ppid && chroma.ppid !== 1 ? await processInfo(chroma.ppid) : null;
    if (parent && parent.pid !== process.pid) {
      throw new DataDirInUseError(`the Chroma data directory ${dataDir} is in use: Chroma pid ${chroma.pid} runs on it, started by process ${parent.pid}; stop that one first`, parent.pid);
    }
    if (parent) continue; // ours: a Chroma this process runs (checked by the record above)
    log("warn", "killing an orphaned Chroma running on the data directory", { pid: chroma.pid, dataDir, recordedService: record?.pid ?? null });
    if (!(await killAndWait(chroma))) throw new DataDirInUseError(`could not stop the orphaned Chroma (pid ${chroma.pid}) on ${dataDir}`, chroma.pid);
  }
}

function handle(path: string, record: LockRecord): DataDirLock {
  let released = false;
  let writing: Promise<void> = Promise.resolve(); // one write at a time; release waits for it
  return {
    path,
    setChroma(pid, port) {
      writing = writing.catch(() => {}).then(async () => {
        if (released) return;
        const startTicks = pid === null ? null : ((await processInfo(pid))?.startTicks ?? null);
        record.chroma = pid === null ? null : { pid, startTicks };
        record.port = port;
        const temp = `${path}.${process.pid}.tmp`;
        await writeFile(temp, JSON.stringify(record) + "\n");
        await rename(temp, path);
      });
      return writing;
    },
    async release() {
      if (released) return;
      released = true;
      await writing.catch(() => {});
      const current = await readRecord(path);
      if (current && current.pid === record.pid && current.startTicks === record.startTicks) await rm(path, { force: true });
    },
  };
}
