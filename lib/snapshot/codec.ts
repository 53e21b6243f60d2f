import { deflateSync, Inflate } from "fflate";
import { ResourceLimitError } from "../errors.js";
import { createDeflatePool, type DeflatePool } from "#deflate-pool";

/**
 * Raw deflate (RFC 1951) for a chunk's sections: fflate on every runtime, the same code
 * and the same memory behaviour in Node and in a Worker (issue 14: node:zlib under
 * workerd's nodejs_compat is not Node's zlib; a restore of real text failed there with
 * "Memory limit exceeded"). Chunks written by node:zlib before (format 2) read the same:
 * both write standard raw deflate.
 *
 * Deflate runs on a pool of worker threads in Node (deflate-pool.ts), so a backup keeps
 * parsing Chroma's pages meanwhile; in a Worker on the calling thread, whole.
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

let pool: DeflatePool | null | undefined;

export function deflateSection(bytes: Uint8Array, options: DeflateOptions): Promise<Uint8Array> {
  const level = (options.huffmanOnly ? 1 : Math.min(Math.max(Math.round(options.level), 0), 9)) as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
  if (bytes.byteLength >= POOL_MIN_BYTES) {
    pool ??= createDeflatePool();
    if (pool) return pool.deflate(bytes, level, options.handOver);
  }
  try {
    return Promise.resolve(deflateSync(bytes, { level }));
  } catch (err) {
    return Promise.reject(isResourceLimit(err) ? new ResourceLimitError(`deflate ran out of a resource: ${(err as Error).message}`, { cause: err }) : err);
  }
}

/**
 * Input fed to the inflater per step. Deflate expands at most ~1032:1, so a bomb's one
 * step writes at most ~17 MB (a Worker has 128 MB). fflate's streaming Inflate pays per
 * step (it reallocates its output window), so smaller steps cost more per byte: on the
 * 1.9 MB text (bench/codec.ts, fastest of 20) 8 KiB steps 18 ms, 16 KiB 13-17 ms, 64 KiB
 * 11-13 ms, fflate in one shot 9 ms, node:zlib (before issue 14) 3.5 ms.
 */
export const INFLATE_STEP = 16 * 1024;

/** Why an inflate failed: the bytes are not what they claim (corruption, never a resource limit). */
export class InflateError extends Error {
  override name = "InflateError";
}

let stepsTaken = 0;

/** Input steps inflateSection has fed, in this thread since it started (tests: a bomb is refused within one step). */
export const inflateStepsTaken = (): number => stepsTaken;

/** After each input step: where the input read so far ends, and the output it made (counted, including any excess). */
export type InflateStepWatcher = (inputEnd: number, output: number) => void;

/**
 * Inflates raw deflate to exactly `size` bytes, or throws InflateError (the data is
 * wrong: not deflate, truncated, longer or shorter than `size`) or ResourceLimitError
 * (memory ran out: not the data's fault). fflate's streaming Inflate, fed INFLATE_STEP
 * bytes of input a step, stops at the end of the step whose output passes `size`: a
 * stream crafted to expand to gigabytes costs at most `size` plus one step.
 */
export function inflateSection(stored: Uint8Array, size: number, onStep?: InflateStepWatcher): Uint8Array {
  const out = new Uint8Array(size);
  let output = 0;
  const inflater = new Inflate((piece) => {
    if (output + piece.byteLength <= size) out.set(piece, output);
    output += piece.byteLength;
  });
  try {
    for (let at = 0; at < stored.byteLength || at === 0; at += INFLATE_STEP) {
      const end = Math.min(at + INFLATE_STEP, stored.byteLength);
      stepsTaken++;
      inflater.push(stored.subarray(at, end), end === stored.byteLength);
      onStep?.(end, output);
      if (output > size) throw new InflateError(`inflates to more than the ${size} bytes claimed`);
    }
  } catch (err) {
    if (err instanceof InflateError) throw err;
    // fflate's own errors are plain Errors with a numeric code (0 unexpected EOF, 1-3 bad block, ...).
    if (typeof (err as { code?: unknown }).code === "number") throw new InflateError(`does not inflate: ${(err as Error).message}`, { cause: err });
    if (isResourceLimit(err)) throw new ResourceLimitError(`inflate ran out of a resource (not a fault in the data): ${(err as Error).message}`, { cause: err });
    throw err;
  }
  if (output !== size) throw new InflateError(`inflates to fewer than the ${size} bytes claimed`);
  return out;
}

/** A failed allocation (RangeError in V8) or a runtime's limit ("Memory limit exceeded" in workerd). */
function isResourceLimit(err: unknown): boolean {
  return err instanceof RangeError || (err instanceof Error && /memory|limit exceeded|cpu time/i.test(err.message));
}
