import type { AppContext } from "./context.js";
import { DASHBOARD_HTML } from "./dashboard/page.js";

/** GET /: the dashboard page (no auth: it holds no data and calls the API with the token the user gives it). */
export const dashboard = (c: AppContext) => {
  c.header("Cache-Control", "no-store");
  c.header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  return c.html(DASHBOARD_HTML);
};
