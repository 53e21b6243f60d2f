import type { AppContext } from "./context.js";

/** Always 200 within a few seconds: a part that could not be read is null (the lock "unknown") and listed in `errors`. */
export const status = async (c: AppContext) => c.json(await c.get("deps").service.status());
