import type * as WorkerThreads from "node:worker_threads";
import type * as NodeModule from "node:module";
import { ResourceLimitError } from "../errors.js";
import { InflateError, inflateFailure, inflateInSteps } from "./inflate-steps.js";

/**
 * A small pool of worker threads running fflate, so that in Node the main thread keeps
 * working while sections compress and inflate (node:zlib's thread pool did that before
 * issue 14): a backup parses Chroma's pages while its chunks deflate; a verify reads and
 * hashes chunks while their sections inflate; a restore builds its requests meanwhile.
 * fflate's own async `deflate()` starts a Worker per call: 125 ms or more a call on 1.9 MB
 * here (bench/codec.ts), against 36 ms on a persistent thread, hand-over included (31 ms
 * of it deflating).
 *
 * Node only, and loaded without an import statement (process.getBuiltinModule), so no
 * bundle gains a static node:worker_threads import. The worker is `eval` code that
 * requires fflate by the absolute path resolved here: nothing to find beside a bundle
 * (dist/server.mjs), under tsx or under vitest; its inflate loop is inflateInSteps's own
 * source text (inflate-steps.ts), so a thread bounds a bomb as the calling thread does.
 * Threads are unref'd while idle, so an idle pool never keeps a process alive, and ref'd
 * while they hold a task, so an awaited task does too.
 */

type Threads = typeof WorkerThreads;
type Worker = WorkerThreads.Worker;

/** A task, as the worker receives it: its input buffer is transferred, not copied. */
type Task = { id: number; op: "deflate"; bytes: Uint8Array; level: number } | { id: number; op: "inflate"; bytes: Uint8Array; size: number; step: number };
/** An error thrown on a thread, as it crosses back: fflate's carry a numeric code. */
interface ThreadError {
  name: string;
  message: string;
  code?: unknown;
}
type Answer = { id: number; steps?: number } & ({ bytes: Uint8Array } | { problem: string } | { error: ThreadError });

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { deflateSync, Inflate, inflateSync } = require(workerData.fflate);
const inflateInSteps = (${inflateInSteps.toString()});
// A scavenge after each task: this thread allocates too little JS for V8 to collect on its
// own, so fflate's dead buffers (one the input's size a task) piled up until external
// memory forced a collection (bench/backup-rss-scale.ts, 100,000 records: 177 -> 164 MB).
// --expose-gc is on only while this context takes its own gc function.
let collect = null;
try {
  const v8 = require("node:v8");
  v8.setFlagsFromString("--expose-gc");
  collect = require("node:vm").runInNewContext("gc");
  v8.setFlagsFromString("--no-expose-gc");
} catch {}
parentPort.on("message", (task) => {
  let steps = 0;
  try {
    const out = task.op === "deflate" ? deflateSync(task.bytes, { level: task.level }) : inflateInSteps({ Inflate, inflateSync }, task.bytes, task.size, task.step, () => steps++);
    if (typeof out === "string") parentPort.postMessage({ id: task.id, problem: out, steps });
    // The input goes back too (unreferenced), to be freed by the main thread's next scavenge.
    else parentPort.postMessage({ id: task.id, bytes: out, steps }, out.buffer === task.bytes.buffer ? [out.buffer] : [out.buffer, task.bytes.buffer]);
    if (collect) collect({ type: "minor" });
  } catch (err) {
    const error = { name: (err && err.name) || "Error", message: String((err && err.message) || err), code: err && typeof err.code === "number" ? err.code : undefined };
    parentPort.postMessage({ id: task.id, error, steps });
  }
});
`;

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve: (bytes: Uint8Array) => void; reject: (err: unknown) => void; op: Task["op"] }>;
}

export interface CodecPool {
  /**
   * fflate's raw deflate of `bytes` at `level`, on a pool thread. `bytes` is copied,
   * unless `handOver` and it spans its whole buffer: then that buffer moves to the thread
   * (detached here; the copy took ~2 ms per 1.9 MB section on this busy machine).
   */
  deflate(bytes: Uint8Array, level: number, handOver?: boolean): Promise<Uint8Array>;
  /**
   * inflateInSteps on a pool thread, `step` bytes of input a step: the bytes, exactly
   * `size` of them (moved back, not copied), or InflateError / ResourceLimitError as
   * inflate-steps.ts names them. `stored` is copied (only its own bytes, not the rest of
   * its buffer), unless `handOver` and it spans its whole buffer, as for deflate.
   */
  inflate(stored: Uint8Array, size: number, step: number, handOver?: boolean): Promise<Uint8Array>;
  /** Ends the threads (pending tasks fail). The pool starts new ones if used again. */
  close(): Promise<void>;
  /** How many threads are running (tests). */
  readonly threads: number;
  /** Tasks handed to the threads and not yet answered. */
  readonly pending: number;
  /** Input steps its threads have fed to inflateInSteps, failed inflates included (tests: a bomb stops within one). */
  readonly inflateSteps: number;
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

/** A thread's error as the caller sees it: a failed allocation is a resource limit; an inflate's as inflateFailure names it. */
function fromThread(op: Task["op"], error: ThreadError): unknown {
  if (op === "inflate") {
    const err = error.name === "RangeError" ? new RangeError(error.message) : Object.assign(new Error(error.message), { code: error.code });
    return inflateFailure(err);
  }
  return error.name === "RangeError" ? new ResourceLimitError(`deflate ran out of a resource: ${error.message}`) : new Error(`deflate failed: ${error.message}`);
}

/**
 * A pool of `size` threads (started on first use), or null where worker threads are not
 * available. `size` defaults to the cores less one (the main thread parses), 1 or 2: a
 * thread costs ~20-25 MB of RSS once it has deflated a few 2 MB sections (measured here),
 * and a backup rarely has more than two chunks compressing at once.
 */
export function createCodecPool(size?: number): CodecPool | null {
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
  let inflateSteps = 0;

  function start(): Thread {
    // execArgv []: no loader hooks (tsx's) in the thread; it runs plain CommonJS.
    const worker = new wt.Worker(WORKER_SOURCE, { eval: true, workerData: { fflate: fflatePath }, execArgv: [] });
    worker.unref();
    const thread: Thread = { worker, pending: new Map() };
    worker.on("message", (answer: Answer) => {
      inflateSteps += answer.steps ?? 0;
      const task = thread.pending.get(answer.id);
      if (!task) return;
      thread.pending.delete(answer.id);
      if (thread.pending.size === 0) worker.unref();
      if ("bytes" in answer) task.resolve(answer.bytes);
      else if ("problem" in answer) task.reject(new InflateError(answer.problem));
      else task.reject(fromThread(task.op, answer.error));
    });
    const fail = (err: Error) => {
      const index = pool.indexOf(thread);
      if (index >= 0) pool.splice(index, 1);
      const outOfMemory = (err as { code?: string }).code === "ERR_WORKER_OUT_OF_MEMORY";
      for (const task of thread.pending.values()) task.reject(outOfMemory ? new ResourceLimitError(`${task.op} ran out of memory: ${err.message}`, { cause: err }) : err);
      thread.pending.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`codec thread exited (code ${code})`)));
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

  /**
   * `bytes` itself when handed over and spanning its whole buffer (it moves), else a copy
   * of just its bytes (`new Uint8Array`, not `slice()`: a Buffer's slice is a view).
   */
  const movable = (bytes: Uint8Array, handOver: boolean) => (handOver && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer ? bytes : new Uint8Array(bytes));

  function run(task: Task): Promise<Uint8Array> {
    const thread = pick();
    return new Promise<Uint8Array>((resolve, reject) => {
      thread.pending.set(task.id, { resolve, reject, op: task.op });
      thread.worker.ref();
      try {
        thread.worker.postMessage(task, [task.bytes.buffer as ArrayBuffer]);
      } catch (err) {
        thread.pending.delete(task.id);
        if (thread.pending.size === 0) thread.worker.unref();
        reject(err as Error);
      }
    });
  }

  return {
    deflate: (bytes, level, handOver = false) => run({ id: nextId++, op: "deflate", bytes: movable(bytes, handOver), level }),
    inflate: (stored, size, step, handOver = false) => run({ id: nextId++, op: "inflate", bytes: movable(stored, handOver), size, step }),
    async close() {
      const closing = pool.splice(0).map((thread) => thread.worker.terminate());
      await Promise.all(closing);
    },
    get threads() {
      return pool.length;
    },
    get pending() {
      return pool.reduce((n, thread) => n + thread.pending.size, 0);
    },
    get inflateSteps() {
      return inflateSteps;
    },
  };
}
