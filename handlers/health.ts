import type { AppContext } from "./context.js";

/** Liveness: no call to Chroma or storage. */
export const health = (c: AppContext) => c.json({ ok: true, version: c.get("deps").version });
