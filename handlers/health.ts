import type { AppContext } from "./context.js";

/** What GET /health answers, here and while the service starts (starting.ts). */
export const healthBody = (version: string) => ({ ok: true, version });

/** Liveness: no call to Chroma or storage. */
export const health = (c: AppContext) => c.json(healthBody(c.get("deps").version));
