import { Hono } from "hono";
import { bearerAuth } from "./auth.js";
import { errorBody, errorResponse } from "./errors.js";
import { healthBody } from "./health.js";

/**
 * What the service answers while it starts, before the backup API exists: the embedded
 * Chroma is being placed from a restore image (seconds to minutes) or started. Platform
 * health checks get `/health` 200 and `/ready` 503 with the reason instead of a refused
 * connection; every other route, once authenticated, `503 chroma_unavailable` with
 * Retry-After, since nothing can reach Chroma yet.
 */
export function createStartingApp(deps: { token: string; version: string; reason: () => string }): Hono {
  const app = new Hono();
  app.get("/health", (c) => c.json(healthBody(deps.version)));
  app.get("/ready", (c) => c.json({ ready: false, reason: deps.reason() }, 503));
  app.use("*", bearerAuth(() => deps.token));
  app.all("*", (c) => {
    c.header("Retry-After", "2");
    return c.json(errorBody({ status: 503, code: "chroma_unavailable", message: `the service is starting: ${deps.reason()}; retry in a few seconds (GET /ready says when it is ready)` }), 503);
  });
  app.onError((err, c) => errorResponse(c, err));
  return app;
}
