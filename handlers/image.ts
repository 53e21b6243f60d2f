import { logFields, validate, type AppContext } from "./context.js";
import { SnapshotRef } from "./schemas.js";

/** POST /backups/:id/image: makes a restore image of the snapshot now; 200 with the image, what was uploaded and its drill. */
export const imageBackup = async (c: AppContext) => {
  const id = validate(SnapshotRef, c.req.param("id"), "path id");
  const made = await c.get("deps").service.makeImage(id, c.req.raw.signal);
  logFields(c, { snapshot: made.image.snapshot, chromaVersion: made.image.chromaVersion, bytes: made.image.bytes, uploadedBytes: made.uploadedBytes, drillOk: made.drill.ok, durationMs: made.drill.durationMs });
  return c.json({ image: made.image, uploadedBytes: made.uploadedBytes, drill: made.drill, imagesPruned: made.imagesPruned });
};
