import type { Inflate } from "fflate";
import { ResourceLimitError } from "../errors.js";

/**
 * Section inflation's shared parts: the step loop that bounds a bomb, run on the calling
 * thread (codec.ts) and, as source text, on the codec pool's threads (codec-pool.ts), and
 * what its failures mean.
 */

/** Why an inflate failed: the bytes are not what they claim (corruption, never a resource limit). */
export class InflateError extends Error {
  override name = "InflateError";
}

/**
 * Inflates raw deflate to exactly `size` bytes with fflate's streaming Inflate, fed `step`
 * bytes of input a step; stops at the end of the step whose output passes `size`, so a
 * stream crafted to expand to gigabytes costs at most `size` plus one step's output (at
 * most ~1032 x `step`: deflate's ceiling). Answers the bytes, or why they are not the
 * section claimed (a sentence); fflate's own errors (bad data: a numeric `code`) and
 * failed allocations are thrown, for inflateFailure to name.
 *
 * It names nothing but its parameters and the language's globals: the pool's threads run
 * its source text (`inflateInSteps.toString()`), so both sides run this one loop.
 */
export function inflateInSteps(Inflater: typeof Inflate, stored: Uint8Array, size: number, step: number, onStep: (inputEnd: number, output: number) => void): Uint8Array | string {
  const out = new Uint8Array(size);
  let output = 0;
  const inflater = new Inflater((piece) => {
    if (output + piece.byteLength <= size) out.set(piece, output);
    output += piece.byteLength;
  });
  for (let at = 0; at < stored.byteLength || at === 0; at += step) {
    const end = Math.min(at + step, stored.byteLength);
    inflater.push(stored.subarray(at, end), end === stored.byteLength);
    onStep(end, output);
    if (output > size) return `inflates to more than the ${size} bytes claimed`;
  }
  return output === size ? out : `inflates to fewer than the ${size} bytes claimed`;
}

/**
 * What a thrown inflate error means: fflate's own (a plain Error with a numeric `code`: 0
 * unexpected EOF, 1-3 bad block, ...) is InflateError; a failed allocation or a runtime's
 * limit is ResourceLimitError (not the data's fault); anything else is returned as is.
 */
export function inflateFailure(err: unknown): unknown {
  if (err instanceof InflateError || err instanceof ResourceLimitError) return err;
  if (typeof (err as { code?: unknown } | null)?.code === "number") return new InflateError(`does not inflate: ${(err as Error).message}`, { cause: err });
  if (isResourceLimit(err)) return new ResourceLimitError(`inflate ran out of a resource (not a fault in the data): ${(err as Error).message}`, { cause: err });
  return err;
}

/** A failed allocation (RangeError in V8) or a runtime's limit ("Memory limit exceeded" in workerd). */
export function isResourceLimit(err: unknown): boolean {
  return err instanceof RangeError || (err instanceof Error && /memory|limit exceeded|cpu time/i.test(err.message));
}
