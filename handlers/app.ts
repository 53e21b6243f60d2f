import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import { bearerAuth } from "./auth.js";
import { createBackup } from "./backup.js";
import type { AppContext, AppDeps, AppEnv } from "./context.js";
import { OperationMetrics } from "../lib/metrics.js";
import { dashboard } from "./dashboard.js";
import { deleteBackup } from "./delete.js";
import { drillBackup } from "./drill.js";
import { errorBody, errorResponse, HttpError, toApiError } from "./errors.js";
import { getBackup } from "./get.js";
import { health } from "./health.js";
import { imageBackup } from "./image.js";
import { listBackups } from "./list.js";
import { metrics } from "./metrics.js";
import { openapi, ROUTES } from "./openapi.js";
import { pruneBackups } from "./prune.js";
import { ready } from "./ready.js";
import { restore } from "./restore.js";
import { skipStartupRestore } from "./skip-startup.js";
import { status } from "./status.js";
import { verifyBackup } from "./verify.js";

/** One JSON log line per request: operation, outcome, duration, request id and what the handler added. */
const accessLog: MiddlewareHandler<AppEnv> = async (c, next) => {
  const started = Date.now();
  c.set("logFields", {});
  await next();
  const operation = c.get("operation");
  if (!operation || operation === "health" || operation === "ready") return;
  const status = c.res.status;
  const fields = c.get("logFields");
  // A handler may set the outcome itself (a drill that ran and failed answers 200).
  const outcome = typeof fields.outcome === "string" ? fields.outcome : status < 400 ? "ok" : "error";
  const durationMs = Date.now() - started;
  c.get("deps").metrics?.observe(operation, outcome, durationMs / 1000);
  c.get("deps").log(status >= 500 || (outcome === "error" && status < 400) ? "error" : status >= 400 ? "warn" : "info", operation, {
    operation,
    outcome,
    status,
    durationMs,
    requestId: c.get("requestId"),
    ...fields,
  });
};

const HANDLERS: Record<string, (c: AppContext) => Response | Promise<Response>> = {
  dashboard,
  health,
  ready,
  openapi,
  metrics,
  status,
  list: listBackups,
  backup: createBackup,
  get: getBackup,
  verify: verifyBackup,
  drill: drillBackup,
  image: imageBackup,
  delete: deleteBackup,
  restore,
  "skip-startup": skipStartupRestore,
  prune: pruneBackups,
};

const op =
  (name: string, handler: (c: AppContext) => Response | Promise<Response>) =>
  (c: AppContext) => {
    c.set("operation", name);
    return handler(c);
  };

/** The service's HTTP app, over one BackupService; mount it anywhere Hono runs. */
export function createApp(appDeps: AppDeps): Hono<AppEnv> {
  const deps: AppDeps = { ...appDeps, metrics: appDeps.metrics ?? new OperationMetrics() };
  const app = new Hono<AppEnv>();
  app.use("*", async (c, next) => {
    c.set("deps", deps);
    await next();
  });
  app.use("*", requestId());
  app.use("*", accessLog);
  // Every route comes from ROUTES, the list /openapi.json documents: public ones before the auth middleware.
  const mount = (r: (typeof ROUTES)[number]) => app.on(r.method.toUpperCase(), r.path, op(r.operation, HANDLERS[r.operation]!));
  for (const r of ROUTES.filter((x) => !x.auth)) mount(r);
  app.use("*", bearerAuth<AppEnv>((c) => c.get("deps").token));
  app.use(
    "*",
    bodyLimit({
      maxSize: deps.maxBodyBytes ?? 1024 * 1024,
      onError: () => {
        throw new HttpError(413, "payload_too_large", `the body is larger than ${deps.maxBodyBytes ?? 1024 * 1024} bytes`);
      },
    }),
  );
  for (const r of ROUTES.filter((x) => x.auth)) mount(r);

  app.notFound((c) => c.json(errorBody({ status: 404, code: "not_found", message: `no route ${c.req.method} ${new URL(c.req.url).pathname}` }), 404));
  app.onError((err, c) => {
    const e = toApiError(err);
    c.set("logFields", { ...c.get("logFields"), error: err.message, errorType: err.name });
    if (e.status >= 500) deps.log("error", "request failed", { requestId: c.get("requestId"), operation: c.get("operation"), error: err.message, errorType: err.name, cause: err.cause instanceof Error ? err.cause.message : undefined });
    return errorResponse(c as AppContext, err);
  });
  return app;
}
