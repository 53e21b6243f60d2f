import type { DeflatePool } from "./deflate-pool.js";

/** The Worker's stand-in for deflate-pool.ts (package.json "imports", condition workerd): no threads there. */
export function createDeflatePool(): DeflatePool | null {
  return null;
}
