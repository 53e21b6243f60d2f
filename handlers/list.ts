import { validate, type AppContext } from "./context.js";
import { ListQuery } from "./schemas.js";

export const listBackups = async (c: AppContext) => {
  const query = validate(ListQuery, c.req.query(), "query");
  return c.json({ snapshots: await c.get("deps").service.list(query) });
};
