import type { Inflate, inflateSync } from "fflate";
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

/** The two fflate inflaters the loop uses (passed in: the pool's threads run this source text with their own fflate). */
export interface Inflaters {
  Inflate: typeof Inflate;
  inflateSync: typeof inflateSync;
}

/**
 * Inflates raw deflate to exactly `size` bytes with fflate, fed `step` bytes of input a
 * step; stops at the end of the step whose output passes `size`, so a stream crafted to
 * expand to gigabytes costs at most `size` plus one step's output (at most ~1032 x `step`:
 * deflate's ceiling). Answers the bytes, or why they are not the section claimed (a
 * sentence); fflate's own errors (bad data: a numeric `code`) and failed allocations are
 * thrown, for inflateFailure to name.
 *
 * Input of at most one step is one step: fflate's one-shot `inflateSync` into a buffer of
 * `size + 1` bytes. It writes nothing past that buffer and decodes no more input than the
 * step, so a bomb costs the same one step, in CPU only; and it skips the streaming
 * Inflate's window copies: 30% less CPU (`npx tsx bench/codec.ts`), for the ~16 KiB chunks
 * of an image above all. A longer input goes through the streaming Inflate, step by step.
 *
 * It names nothing but its parameters and the language's globals: the pool's threads run
 * its source text (`inflateInSteps.toString()`), so both sides run this one loop.
 */
export function inflateInSteps(inflaters: Inflaters, stored: Uint8Array, size: number, step: number, onStep: (inputEnd: number, output: number) => void): Uint8Array | string {
  const more = `inflates to more than the ${size} bytes claimed`;
  if (stored.byteLength > 0 && stored.byteLength <= step) {
    const out = new Uint8Array(size + 1); // a failed allocation throws here, a resource limit
    let made: Uint8Array;
    try {
      // Past the end of `out` fflate's writes are dropped, but a stored block's copy throws RangeError: output past the claim either way.
      made = inflaters.inflateSync(stored, { out });
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      onStep(stored.byteLength, size + 1);
      return more;
    }
    onStep(stored.byteLength, made.byteLength);
    if (made.byteLength > size) return more;
    return made.byteLength === size ? made.subarray(0, size) : `inflates to fewer than the ${size} bytes claimed`;
  }
  const out = new Uint8Array(size);
  let output = 0;
  const inflater = new inflaters.Inflate((piece) => {
    if (output + piece.byteLength <= size) out.set(piece, output);
    output += piece.byteLength;
  });
  for (let at = 0; at < stored.byteLength || at === 0; at += step) {
    const end = Math.min(at + step, stored.byteLength);
    inflater.push(stored.subarray(at, end), end === stored.byteLength);
    onStep(end, output);
    if (output > size) return more;
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
