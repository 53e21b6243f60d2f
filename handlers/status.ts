import type { AppContext } from "./context.js";

export const status = async (c: AppContext) => c.json(await c.get("deps").service.status());
