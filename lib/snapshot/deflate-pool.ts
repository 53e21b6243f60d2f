import type * as WorkerThreads from "node:worker_threads";
import type * as NodeModule from "node:module";
import { ResourceLimitError } from "../errors.js";

/**
 * A small pool of worker threads running fflate's deflateSync, so that in Node a backup
 * keeps parsing Chroma's pages while its chunks compress (node:zlib's thread pool did
 * that before issue 14). fflate's own async `deflate()` starts a Worker per call: 125 ms
 * or more a call on 1.9 MB here (bench/codec.ts), against 36 ms on a persistent thread,
 * hand-over included (31 ms of it deflating).
 *
 * Node only, and loaded without an import statement (process.getBuiltinModule), so no
 * bundle gains a static node:worker_threads import. The worker is `eval` code that
 * requires fflate by the absolute path resolved here: nothing to find beside a bundle
 * (dist/server.mjs), under tsx or under vitest. Threads are unref'd while idle, so an
 * idle pool never keeps a process alive, and ref'd while they hold a task, so an
 * awaited compression does too.
 */

type Threads = typeof WorkerThreads;
type Worker = WorkerThreads.Worker;

/** A deflate task, as the worker receives it: its input buffer is transferred, not copied. */
interface Task {
  id: number;
  bytes: Uint8Array;
  level: number;
}
type Answer = { id: number; bytes: Uint8Array } | { id: number; error: { name: string; message: string } };

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { deflateSync } = require(workerData.fflate);
// A scavenge after each task: this thread allocates too little JS for V8 to collect on its
// own, so fflate's dead buffers (one the input's size a task) piled up until external
// memory forced a collection (bench/backup-rss-scale.ts, 100,000 records: 177 -> 164 MB).
let collect = null;
try {
  const v8 = require("node:v8");
  v8.setFlagsFromString("--expose-gc");
  collect = require("node:vm").runInNewContext("gc"); // this context's own, not a global
  v8.setFlagsFromString("--no-expose-gc");
} catch {}
parentPort.on("message", (task) => {
  try {
    const out = deflateSync(task.bytes, { level: task.level });
    // The input goes back too, to be freed by the main thread's next scavenge.
    parentPort.postMessage({ id: task.id, bytes: out }, out.buffer === task.bytes.buffer ? [out.buffer] : [out.buffer, task.bytes.buffer]);
    if (collect) collect({ type: "minor" });
  } catch (err) {
    parentPort.postMessage({ id: task.id, error: { name: err && err.name || "Error", message: String(err && err.message || err) } });
  }
});
`;

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve: (bytes: Uint8Array) => void; reject: (err: Error) => void }>;
}

export interface DeflatePool {
  /**
   * fflate's raw deflate of `bytes` at `level`, on a pool thread. `bytes` is copied,
   * unless `handOver` and it spans its whole buffer: then that buffer moves to the thread
   * (detached here; the copy took ~2 ms per 1.9 MB section on this busy machine).
   */
  deflate(bytes: Uint8Array, level: number, handOver?: boolean): Promise<Uint8Array>;
  /** Ends the threads (pending tasks fail). The pool starts new ones if used again. */
  close(): Promise<void>;
  /** How many threads are running (tests). */
  readonly threads: number;
}

/** Node's builtins, or null outside Node (a Worker: its nodejs_compat is not Node). */
function nodeBuiltins(): { threads: Threads; module: typeof NodeModule } | null {
  if ((globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent === "Cloudflare-Workers") return null;
  const proc = (globalThis as { process?: { release?: { name?: string }; getBuiltinModule?: (id: string) => unknown } }).process;
  if (proc?.release?.name !== "node" || typeof proc.getBuiltinModule !== "function") return null;
  const threads = proc.getBuiltinModule("node:worker_threads") as Threads | undefined;
  const module = proc.getBuiltinModule("node:module") as typeof NodeModule | undefined;
  return threads && module ? { threads, module } : null;
}

/**
 * A pool of `size` threads (started on first use), or null where worker threads are not
 * available. `size` defaults to the cores less one (the main thread parses), 1 or 2: a
 * thread costs ~20-25 MB of RSS once it has deflated a few 2 MB sections (measured here),
 * and a backup rarely has more than two chunks compressing at once.
 */
export function createDeflatePool(size?: number): DeflatePool | null {
  const node = nodeBuiltins();
  if (!node) return null;
  const { threads: wt, module } = node;
  let fflatePath: string;
  try {
    fflatePath = module.createRequire(import.meta.url).resolve("fflate");
  } catch {
    return null;
  }
  const cores = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule?.("node:os") as { availableParallelism?: () => number } | undefined;
  const threadCount = size ?? Math.min(2, Math.max(1, (cores?.availableParallelism?.() ?? 2) - 1));
  const pool: Thread[] = [];
  let nextId = 0;

  function start(): Thread {
    // execArgv []: no loader hooks (tsx's) in the thread; it runs plain CommonJS.
    const worker = new wt.Worker(WORKER_SOURCE, { eval: true, workerData: { fflate: fflatePath }, execArgv: [] });
    worker.unref();
    const thread: Thread = { worker, pending: new Map() };
    worker.on("message", (answer: Answer) => {
      const task = thread.pending.get(answer.id);
      if (!task) return;
      thread.pending.delete(answer.id);
      if (thread.pending.size === 0) worker.unref();
      if ("bytes" in answer) task.resolve(answer.bytes);
      else task.reject(answer.error.name === "RangeError" ? new ResourceLimitError(`deflate ran out of a resource: ${answer.error.message}`) : new Error(`deflate failed: ${answer.error.message}`));
    });
    const fail = (err: Error) => {
      const index = pool.indexOf(thread);
      if (index >= 0) pool.splice(index, 1);
      const outOfMemory = (err as { code?: string }).code === "ERR_WORKER_OUT_OF_MEMORY";
      for (const task of thread.pending.values()) task.reject(outOfMemory ? new ResourceLimitError(`deflate ran out of memory: ${err.message}`, { cause: err }) : err);
      thread.pending.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`deflate thread exited (code ${code})`)));
    pool.push(thread);
    return thread;
  }

  /** An idle thread, else a new one while under `threadCount`, else the least loaded. */
  function pick(): Thread {
    let best: Thread | undefined;
    for (const thread of pool) if (!best || thread.pending.size < best.pending.size) best = thread;
    if (best && (best.pending.size === 0 || pool.length >= threadCount)) return best;
    return start();
  }

  return {
    deflate(bytes, level, handOver = false) {
      const thread = pick();
      const id = nextId++;
      const whole = handOver && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
      const task: Task = { id, bytes: whole ? bytes : bytes.slice(), level };
      return new Promise<Uint8Array>((resolve, reject) => {
        thread.pending.set(id, { resolve, reject });
        thread.worker.ref();
        try {
          thread.worker.postMessage(task, [task.bytes.buffer as ArrayBuffer]);
        } catch (err) {
          thread.pending.delete(id);
          if (thread.pending.size === 0) thread.worker.unref();
          reject(err as Error);
        }
      });
    },
    async close() {
      const closing = pool.splice(0).map((thread) => thread.worker.terminate());
      await Promise.all(closing);
    },
    get threads() {
      return pool.length;
    },
  };
}
