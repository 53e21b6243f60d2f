import { logFields, validate, type AppContext } from "./context.js";
import { SnapshotRef } from "./schemas.js";

export const verifyBackup = async (c: AppContext) => {
  const id = validate(SnapshotRef, c.req.param("id"), "path id");
  const report = await c.get("deps").service.verify(id, undefined, c.req.raw.signal);
  logFields(c, { snapshot: id, ok: report.ok, chunks: report.chunks, records: report.records, errors: report.errors.length });
  return c.json(report);
};
