/**
 * `chroma-backup run -- CMD ...` (and `npm start -- CMD ...`), after Litestream's
 * `replicate -exec`: CMD starts once the service is ready (the startup restore is over and
 * Chroma answers), with where Chroma and the backup API are in its environment; the
 * signals the process receives are passed on to it; its exit ends the service, whose exit
 * code is CMD's.
 */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { Logger } from "../lib/log.js";
import type { Readiness } from "./readiness.js";

/** How long CMD has to exit after a forwarded SIGTERM or SIGINT before it is killed. */
export const CHILD_STOP_TIMEOUT_MS = 10_000;

interface ServiceForChild {
  url: string;
  chromaUrl: string;
  token: string;
  readiness(): Promise<Readiness>;
}

/** Polls the readiness until ready; logs each new reason it waits for. False when `cancelled` turned true first. */
export async function waitUntilReady(running: ServiceForChild, log: Logger, cancelled: () => boolean, everyMs = 250): Promise<boolean> {
  let last: string | undefined;
  while (!cancelled()) {
    const answer = await running.readiness();
    if (answer.ready) return true;
    if (answer.reason !== last) {
      last = answer.reason;
      log("info", "waiting before starting the app", { reason: answer.reason });
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return false;
}

/** CMD's environment: the caller's, plus where Chroma and the backup API are. */
export function childEnv(running: ServiceForChild, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const chroma = new URL(running.chromaUrl);
  return {
    ...base,
    CHROMA_URL: running.chromaUrl,
    CHROMA_HOST: chroma.hostname,
    CHROMA_PORT: chroma.port || (chroma.protocol === "https:" ? "443" : "80"),
    BACKUP_URL: running.url,
    BACKUP_API_TOKEN: running.token,
  };
}

/** The shell's convention: the exit code, or 128 + the signal's number. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
}

export interface Child {
  /** Passes a signal on; after SIGTERM or SIGINT, kills CMD if it has not exited within CHILD_STOP_TIMEOUT_MS. */
  forward(signal: NodeJS.Signals): void;
  /** CMD's exit code (128 + n for signal n); 127 when it could not be started. */
  exitCode: Promise<number>;
}

export function runChild(command: string[], running: ServiceForChild, log: Logger, stopTimeoutMs = CHILD_STOP_TIMEOUT_MS): Child {
  const [file, ...args] = command as [string, ...string[]];
  const child = spawn(file, args, { stdio: "inherit", env: childEnv(running) });
  let killTimer: NodeJS.Timeout | undefined;
  const exitCode = new Promise<number>((resolve) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // started: an error of a later kill(), not of the start
      const why = err.code === "ENOENT" ? "not found (is it installed and on PATH?)" : err.code === "EACCES" ? "permission denied" : err.message;
      process.stderr.write(`chroma-backup run: cannot start ${JSON.stringify(file)}: ${why}\n`);
      log("error", "the app could not be started", { command, error: err.message, code: err.code });
      resolve(127);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(killTimer);
      const exit = exitCodeOf(code, signal);
      log(exit === 0 ? "info" : "warn", "the app exited; stopping", { command: file, code, signal, exitCode: exit });
      resolve(exit);
    });
  });
  if (child.pid !== undefined) log("info", "started the app", { command, pid: child.pid });
  return {
    forward(signal) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      log("info", "passing a signal on to the app", { signal, pid: child.pid });
      child.kill(signal);
      if ((signal === "SIGTERM" || signal === "SIGINT") && !killTimer) {
        killTimer = setTimeout(() => {
          log("warn", `the app did not exit within ${stopTimeoutMs} ms of ${signal}: killing it`, { pid: child.pid });
          child.kill("SIGKILL");
        }, stopTimeoutMs);
      }
    },
    exitCode,
  };
}
