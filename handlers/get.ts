import { summarize } from "../lib/snapshot/manifest.js";
import { logFields, validate, type AppContext } from "./context.js";
import { SnapshotRef } from "./schemas.js";

export const getBackup = async (c: AppContext) => {
  const id = validate(SnapshotRef, c.req.param("id"), "path id");
  const manifest = await c.get("deps").service.get(id);
  logFields(c, { snapshot: manifest.id });
  return c.json({
    ...summarize(manifest),
    chroma: manifest.chroma,
    warnings: manifest.warnings,
    drill: await c.get("deps").service.drillOf(manifest.id),
    collections: manifest.collections.map((col) => ({
      name: col.name,
      records: col.records,
      bytes: col.bytes,
      chunks: col.chunks.length,
      metadata: JSON.parse(col.metadataJson) as unknown,
      configuration: JSON.parse(col.configurationJson) as unknown,
    })),
  });
};
