import * as v from "valibot";
import { isSnapshotId } from "../lib/snapshot/manifest.js";
import { logFields, validate, type AppContext } from "./context.js";

const DeletableId = v.pipe(v.string(), v.check(isSnapshotId, "a snapshot id looks like 20261124T021530Z-3f9a (latest is not accepted here)"));

export const deleteBackup = async (c: AppContext) => {
  const id = validate(DeletableId, c.req.param("id"), "path id");
  logFields(c, { snapshot: id });
  return c.json(await c.get("deps").service.delete(id));
};
