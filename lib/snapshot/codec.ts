import { deflateSync, Inflate, inflateSync } from "fflate";
import { ResourceLimitError } from "../errors.js";
import { createCodecPool, type CodecPool } from "#codec-pool";
import { InflateError, inflateFailure, inflateInSteps, isResourceLimit } from "./inflate-steps.js";

export { InflateError } from "./inflate-steps.js";

/**
 * Raw deflate (RFC 1951) for a chunk's sections: fflate on every runtime, the same code
 * and the same memory behaviour in Node and in a Worker (issue 14: node:zlib under
 * workerd's nodejs_compat is not Node's zlib; a restore of real text failed there with
 * "Memory limit exceeded"). Chunks written by node:zlib before (format 2) read the same:
 * both write standard raw deflate.
 *
 * In Node, sections of some size deflate and inflate on a pool of worker threads
 * (codec-pool.ts), so a backup keeps parsing Chroma's pages meanwhile, and a verify or a
 * restore keeps reading, hashing and writing; in a Worker on the calling thread.
 * `npx tsx bench/codec.ts`, 1.9 MB of the bench's text at level 2, fastest of 20 (a
 * shared machine, load 8-19): node:zlib 19 ms (before issue 14, in its thread pool),
 * fflate deflateSync 31 ms (3% smaller output), the pool 36 ms a call including the
 * hand-over, fflate's async deflate() 125 ms (a Worker started per call). fflate's
 * streaming Deflate, fed as the text is produced, took 36-38 ms for the same bytes and
 * would save one copy of a chunk's text (a few MB): not worth ~20% more CPU where CPU
 * time is the binding limit (a Worker's).
 */

/** What a writer asks of a section's compression. */
export interface DeflateOptions {
  level: number;
  /** The embeddings' high-byte plane: fflate has no Huffman-only strategy, so level 1, its cheapest matching. */
  huffmanOnly?: boolean;
  /** The caller gives `bytes` up: in Node its buffer may move to the pool thread (detached) instead of being copied. */
  handOver?: boolean;
}

/** Below this, a section is deflated on the calling thread: the round trip to a pool thread would cost more. */
const POOL_MIN_BYTES = 32 * 1024;

let pool: CodecPool | null | undefined;

export function deflateSection(bytes: Uint8Array, options: DeflateOptions): Promise<Uint8Array> {
  const level = (options.huffmanOnly ? 1 : Math.min(Math.max(Math.round(options.level), 0), 9)) as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
  if (bytes.byteLength >= POOL_MIN_BYTES) {
    pool ??= createCodecPool();
    if (pool) return pool.deflate(bytes, level, options.handOver);
  }
  try {
    return Promise.resolve(deflateSync(bytes, { level }));
  } catch (err) {
    return Promise.reject(isResourceLimit(err) ? new ResourceLimitError(`deflate ran out of a resource: ${(err as Error).message}`, { cause: err }) : err);
  }
}

/**
 * Input fed to the inflater per step on the calling thread. Deflate expands at most
 * ~1032:1, so a bomb's one step writes at most ~17 MB (a Worker has 128 MB). fflate's
 * streaming Inflate pays per step (it reallocates its output window), so smaller steps
 * cost more per byte: on the 1.9 MB text (`npx tsx bench/codec.ts`, fastest of 20, quiet
 * machine) 8 KiB steps 14.3 ms, 16 KiB 12.4 ms, 64 KiB 11.7 ms, fflate in one shot 9.3 ms,
 * node:zlib (before issue 14) 3.3 ms.
 */
export const INFLATE_STEP = 16 * 1024;

/**
 * Input per step on a pool thread (Node only, not a 128 MB Worker): a bomb's one step
 * writes at most 32 KiB x 1032 = ~33 MB there (fflate may double its buffer to hold it).
 * 64 KiB steps cost no less CPU (`npx tsx bench/codec.ts`, session 7: 15.6 ms either way
 * on the 1.9 MB text) and let one step of a bomb grow the process by ~64 MiB
 * (test/reliability/format-attacks.test.ts measured +64.4 MiB once).
 */
export const THREAD_INFLATE_STEP = 32 * 1024;

/** Below this claimed size a section inflates on the calling thread even in Node: the round trip to a pool thread would cost more. */
const POOL_MIN_INFLATED = 64 * 1024;

let stepsTaken = 0;

/** Input steps fed to the inflater since this process started, on this thread and the pool's (tests: a bomb is refused within one step). */
export const inflateStepsTaken = (): number => stepsTaken + (pool?.inflateSteps ?? 0);

/** The part of inflateStepsTaken taken on this thread (tests: where a section inflated). */
export const inflateStepsHere = (): number => stepsTaken;

/** After each input step: where the input read so far ends, and the output it made (counted, including any excess). */
export type InflateStepWatcher = (inputEnd: number, output: number) => void;

/**
 * Inflates raw deflate to exactly `size` bytes on the calling thread, or throws
 * InflateError (the data is wrong: not deflate, truncated, longer or shorter than `size`)
 * or ResourceLimitError (memory ran out: not the data's fault). fflate, fed INFLATE_STEP
 * bytes of input a step (inflate-steps.ts: input of one step inflates in one shot), stops
 * at the end of the step whose output passes `size`: a stream crafted to expand to
 * gigabytes costs at most `size` plus one step.
 */
export function inflateSection(stored: Uint8Array, size: number, onStep?: InflateStepWatcher): Uint8Array {
  let out: Uint8Array | string;
  try {
    out = inflateInSteps({ Inflate, inflateSync }, stored, size, INFLATE_STEP, (inputEnd, output) => {
      stepsTaken++;
      onStep?.(inputEnd, output);
    });
  } catch (err) {
    throw inflateFailure(err);
  }
  if (typeof out === "string") throw new InflateError(out);
  return out;
}

/** What an inflating caller may give up. */
export interface InflateOptions {
  /** The caller gives `stored` up: in Node its buffer may move to the pool thread (detached) instead of being copied. */
  handOver?: boolean;
  /**
   * On the pool whatever its size (Node): for a caller with many small sections in flight
   * and its own work to overlap (an image download reads and hashes while chunks inflate).
   */
  offThread?: boolean;
  /**
   * The calling thread has nothing better to do than wait (a verify): when the pool
   * already has POOL_BACKLOG tasks or more, this one inflates here instead, so both cores
   * inflate.
   */
  helpWhenBusy?: boolean;
}

/**
 * Tasks queued on the pool past which a helpWhenBusy caller inflates on its own thread:
 * 6, one chunk's two sections for each of verify's 6 chunks in flight. `npx tsx
 * bench/verify-floor.ts` runs verify's loop over the bench's 20,000 records (74 sections)
 * in a warm process: 252-258 ms with every section on the pool, 160-173 ms so. (A fresh
 * process pays ~250 ms more whatever the split: fflate's code is compiled on both threads
 * while the first sections inflate.)
 */
const POOL_BACKLOG = 6;

/**
 * inflateSection's result and errors, exactly, without holding the calling thread: in
 * Node a section claiming POOL_MIN_INFLATED bytes or more inflates on the codec pool
 * (THREAD_INFLATE_STEP steps); smaller ones, and every section in a Worker, inline.
 */
export function inflateSectionAsync(stored: Uint8Array, size: number, options: InflateOptions = {}): Promise<Uint8Array> {
  if (size >= POOL_MIN_INFLATED || options.offThread) {
    pool ??= createCodecPool();
    if (pool && !(options.helpWhenBusy && pool.pending >= POOL_BACKLOG)) return pool.inflate(stored, size, THREAD_INFLATE_STEP, options.handOver);
  }
  try {
    return Promise.resolve(inflateSection(stored, size));
  } catch (err) {
    return Promise.reject(err as Error);
  }
}
