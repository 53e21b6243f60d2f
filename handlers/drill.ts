import { logFields, validate, type AppContext } from "./context.js";
import { SnapshotRef } from "./schemas.js";

/** POST /backups/:id/drill: 200 with the result whether it passed or not (`ok`); a failed drill counts as an error outcome. */
export const drillBackup = async (c: AppContext) => {
  const id = validate(SnapshotRef, c.req.param("id"), "path id");
  const result = await c.get("deps").service.drill(id);
  const failed = result.checks.filter((check) => !check.ok);
  logFields(c, { snapshot: result.snapshot, ok: result.ok, records: result.records, durationMs: result.durationMs, outcome: result.ok ? "ok" : "error", ...(failed.length ? { failed: failed.map((f) => f.message) } : {}) });
  return c.json({ ok: result.ok, snapshot: result.snapshot, at: result.at, records: result.records, durationMs: result.durationMs, checks: result.checks });
};
