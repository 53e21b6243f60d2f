import { deflateSync, Inflate } from "fflate";
import type * as NodeZlibModule from "node:zlib"; // types only: erased, never loaded
import { ResourceLimitError } from "../errors.js";

/**
 * Raw deflate (RFC 1951) for a chunk's sections, chosen by runtime.
 *
 * Inflate: fflate's streaming Inflate in a Worker (and wherever Node's zlib is absent):
 * node:zlib under workerd's nodejs_compat is not Node's zlib, and a restore of 2,000
 * records of real text failed there with "Memory limit exceeded". In Node, node:zlib
 * with `maxOutputLength` (it stops as soon as the output passes the claimed size), which
 * `npx tsx bench/codec.ts` measured at 6.9 ms on a 1.9 MB text section of the bench's
 * text, against 41.5 ms for fflate in 8 KiB steps (24 ms in one shot); restore and verify
 * inflate every section.
 *
 * Deflate: fflate in a Worker (and wherever Node's zlib is absent); node:zlib in Node,
 * where fflate costs speed. Same text, level 2 (bench/codec.ts): node:zlib 28 ms in its
 * thread pool (off the main thread, so a backup keeps parsing Chroma's pages meanwhile),
 * fflate's deflateSync 68 ms on the main thread (3% smaller); the high-byte plane 0.5 ms
 * (Huffman only) against 2.5 ms. Issue 14 measured a backup of 20,000 records at 0.97 of
 * a raw read with node:zlib, 1.17 with fflate. Both write standard raw deflate, and the
 * one inflater reads either.
 */

/** What a writer asks of a section's compression. */
export interface DeflateOptions {
  level: number;
  /** Huffman coding only (no string matching): for the embeddings' high-byte plane. */
  huffmanOnly?: boolean;
}

type NodeZlib = typeof NodeZlibModule;

/**
 * node:zlib when running in Node, else null. Read through process.getBuiltinModule
 * (no import statement), so the Worker bundle carries no node:zlib on this path, and
 * workerd (whose navigator.userAgent says so) never uses its nodejs_compat zlib.
 */
function nodeZlib(): NodeZlib | null {
  if ((globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent === "Cloudflare-Workers") return null;
  const proc = (globalThis as { process?: { release?: { name?: string }; getBuiltinModule?: (id: string) => unknown } }).process;
  if (proc?.release?.name !== "node" || typeof proc.getBuiltinModule !== "function") return null;
  return (proc.getBuiltinModule("node:zlib") as NodeZlib | undefined) ?? null;
}

const zlib = nodeZlib();

/** Which deflate this runtime uses (tests and logs). */
export const deflateCodec: "node:zlib" | "fflate" = zlib ? "node:zlib" : "fflate";

export function deflateSection(bytes: Uint8Array, options: DeflateOptions): Promise<Uint8Array> {
  if (!zlib) {
    // fflate has no Huffman-only strategy; level 1 is its cheapest matching (measured on the plane: same size class).
    const level = (options.huffmanOnly ? 1 : Math.min(Math.max(options.level, 0), 9)) as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
    try {
      return Promise.resolve(deflateSync(bytes, { level }));
    } catch (err) {
      return Promise.reject(isResourceLimit(err) ? new ResourceLimitError(`deflate ran out of a resource: ${(err as Error).message}`, { cause: err }) : err);
    }
  }
  const z = zlib;
  // Output in steps of up to 256 KiB: each step is a round trip between the pool and the
  // main thread (the default 16 KiB made them a measurable share of the backup's CPU).
  const chunkSize = Math.min(Math.max(bytes.byteLength, 64 * 1024), 256 * 1024);
  const zopts = options.huffmanOnly
    ? { strategy: z.constants.Z_HUFFMAN_ONLY, chunkSize }
    : // memLevel 9: zlib's largest hash table, 7-17% faster here at the same size.
      { level: options.level, memLevel: 9, chunkSize };
  return new Promise((resolve, reject) => z.deflateRaw(bytes, zopts, (err, out) => (err ? reject(err) : resolve(out))));
}

/**
 * Input fed to the inflater per step. Deflate expands at most ~1032:1, so a bomb's one
 * step writes at most ~8.5 MB (a Worker has 128 MB). Smaller steps cost more per byte
 * (8 KiB: 41.5 ms against 24 ms in one shot on 1.9 MB, bench/codec.ts); bigger ones let
 * a bomb write more before it is stopped.
 */
const INFLATE_STEP = 8 * 1024;

/** Why an inflate failed: the bytes are not what they claim, or the runtime ran out of a resource. */
export class InflateError extends Error {
  override name = "InflateError";
}

/**
 * Inflates raw deflate to exactly `size` bytes, or throws InflateError (the data is
 * wrong: not deflate, truncated, longer or shorter than `size`) or ResourceLimitError
 * (memory ran out: not the data's fault). Either inflater stops as soon as the output
 * passes `size` (node:zlib by `maxOutputLength`, fflate at the end of the 8 KiB input step
 * that passed it), so a stream crafted to expand to gigabytes costs at most `size` plus
 * one step.
 */
export function inflateSection(stored: Uint8Array, size: number): Uint8Array {
  return zlib ? inflateWithZlib(zlib, stored, size) : inflateStreaming(stored, size);
}

/** The Worker's inflater (fflate, in 8 KiB input steps); exported for its tests in Node. */
export function inflateStreaming(stored: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let written = 0;
  let over = false;
  const inflater = new Inflate((piece) => {
    if (over) return;
    if (written + piece.byteLength > size) {
      over = true;
      return;
    }
    out.set(piece, written);
    written += piece.byteLength;
  });
  try {
    for (let at = 0; at < stored.byteLength || at === 0; at += INFLATE_STEP) {
      const end = Math.min(at + INFLATE_STEP, stored.byteLength);
      inflater.push(stored.subarray(at, end), end === stored.byteLength);
      if (over) throw new InflateError(`inflates to more than the ${size} bytes claimed`);
    }
  } catch (err) {
    if (err instanceof InflateError) throw err;
    // fflate's own errors are plain Errors with a numeric code (0 unexpected EOF, 1-3 bad block, ...).
    if (typeof (err as { code?: unknown }).code === "number") throw new InflateError(`does not inflate: ${(err as Error).message}`, { cause: err });
    if (isResourceLimit(err)) throw new ResourceLimitError(`inflate ran out of a resource (not a fault in the data): ${(err as Error).message}`, { cause: err });
    throw err;
  }
  if (written !== size) throw new InflateError(`inflates to fewer than the ${size} bytes claimed`);
  return out;
}

function inflateWithZlib(z: NodeZlib, stored: Uint8Array, size: number): Uint8Array {
  let out: Uint8Array;
  try {
    out = z.inflateRawSync(stored, { maxOutputLength: Math.max(size, 1) });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === "ERR_BUFFER_TOO_LARGE") throw new InflateError(`inflates to more than the ${size} bytes claimed`, { cause: err });
    if (typeof code === "string" && code.startsWith("Z_")) throw new InflateError(`does not inflate: ${(err as Error).message}`, { cause: err });
    if (isResourceLimit(err)) throw new ResourceLimitError(`inflate ran out of a resource (not a fault in the data): ${(err as Error).message}`, { cause: err });
    throw err;
  }
  if (out.byteLength !== size) throw new InflateError(`inflates to ${out.byteLength < size ? "fewer" : "more"} than the ${size} bytes claimed`);
  return out;
}

/** A failed allocation (RangeError in V8) or a runtime's limit ("Memory limit exceeded" in workerd). */
function isResourceLimit(err: unknown): boolean {
  return err instanceof RangeError || (err instanceof Error && /memory|limit exceeded|cpu time/i.test(err.message));
}
