import { jsonBody, logFields, type AppContext } from "./context.js";
import { runWithProgress } from "./progress.js";
import { RestoreBody } from "./schemas.js";

export const restore = async (c: AppContext) => {
  const body = await jsonBody(c, RestoreBody);
  const { service } = c.get("deps");
  return runWithProgress(
    c,
    async (onProgress) => {
      const outcome = await service.restore(body, onProgress, c.req.raw.signal);
      logFields(c, outcome.restored ? { snapshot: outcome.snapshot, collections: outcome.collections.length, records: outcome.collections.reduce((n, x) => n + x.records, 0), safetySnapshot: outcome.safetySnapshot } : { restored: false, reason: outcome.reason });
      return outcome;
    },
    (outcome) => ({ status: 200, body: outcome }),
  );
};
