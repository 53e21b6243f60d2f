import { jsonBody, logFields, type AppContext } from "./context.js";
import { PruneBody } from "./schemas.js";

export const pruneBackups = async (c: AppContext) => {
  const { grace, ...body } = await jsonBody(c, PruneBody);
  const result = await c.get("deps").service.prune({ ...body, graceSeconds: grace }, c.req.raw.signal);
  logFields(c, { dryRun: result.dryRun, deleted: result.deleted.length, chunksDeleted: result.chunksDeleted, bytesFreed: result.bytesFreed, remaining: result.remaining });
  return c.json(result);
};
