import { validate, type AppContext } from "./context.js";
import { ListQuery } from "./schemas.js";

export const listBackups = async (c: AppContext) => {
  const query = validate(ListQuery, c.req.query(), "query");
  const { service } = c.get("deps");
  const [snapshots, drills] = await Promise.all([service.list(query), service.drills()]);
  return c.json({ snapshots: snapshots.map((s) => ({ ...s, drill: drills.get(s.id) ?? null })) });
};
