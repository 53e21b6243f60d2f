import type { CodecPool } from "./codec-pool.js";

/** The Worker's stand-in for codec-pool.ts (package.json "imports", condition workerd): no threads there. */
export function createCodecPool(): CodecPool | null {
  return null;
}
