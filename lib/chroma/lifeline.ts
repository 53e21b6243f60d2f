/**
 * How the embedded Chroma never outlives the service, even after a SIGKILL.
 *
 * The Chroma server is a Node process running chromadb's bindings (./launcher.ts) whose main thread
 * is blocked in the Rust server (a native binding), so no JavaScript of its own runs
 * after it starts. We preload (`--import`) a module that starts one worker thread; the
 * worker blocks reading the child's stdin, a pipe whose other end only the service holds.
 * When the service exits, however it exits (SIGKILL included), the kernel closes that end,
 * the read returns end-of-file, and the worker SIGKILLs its own process. No extra process
 * (a supervisor would be one more thing a group SIGKILL could leave behind); the worker
 * adds about 11 MB to Chroma's ~70 MB of RSS (no heap limits: ones small enough to save
 * memory kill the worker as it starts, and the blocked main thread would never know).
 *
 * The worker says it is armed on stderr (LIFELINE_ARMED); the service checks that line.
 *
 * The worker's source travels in an environment variable so that `ps` shows a short
 * command line.
 */
export const LIFELINE_ENV = "CHROMA_BACKUP_LIFELINE";

/** The line the worker writes to stderr once it watches the pipe. */
export const LIFELINE_ARMED = "chroma-backup: lifeline armed";

const WORKER_SOURCE = `
const { readSync, writeSync } = require("node:fs");
writeSync(2, ${JSON.stringify(LIFELINE_ARMED)} + "\\n");
const buffer = Buffer.alloc(64);
const pause = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
  let n = 0;
  try {
    n = readSync(0, buffer);
  } catch (err) {
    if (err.code === "EAGAIN" || err.code === "EINTR") { Atomics.wait(pause, 0, 0, 100); continue; }
  }
  if (n === 0) break;
}
process.kill(process.pid, "SIGKILL");
`;

const PRELOAD = `import { Worker } from "node:worker_threads"; new Worker(process.env.${LIFELINE_ENV}, { eval: true }).unref();`;

/** Node arguments that arm the lifeline in the process they start (stdin must be a pipe from the owner). */
export function lifelineArgs(): string[] {
  return ["--import", `data:text/javascript,${encodeURIComponent(PRELOAD)}`];
}

/** Environment for that process. */
export function lifelineEnv(): Record<string, string> {
  return { [LIFELINE_ENV]: WORKER_SOURCE };
}
