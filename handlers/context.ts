import type { Context } from "hono";
import * as v from "valibot";
import type { LogFields, Logger } from "../lib/log.js";
import type { OperationMetrics } from "../lib/metrics.js";
import type { BackupService } from "../lib/service.js";
import { HttpError, validationError } from "./errors.js";

export interface AppDeps {
  service: BackupService;
  /** The bearer token every route but /health requires. */
  token: string;
  version: string;
  log: Logger;
  maxBodyBytes?: number;
  /** What `GET /ready` answers, supplied by the runtime (startup restore done, Chroma answers). */
  readiness?: () => Promise<{ ready: boolean; reason?: string }>;
  /** Operation counters and durations for /metrics (createApp makes one when absent). */
  metrics?: OperationMetrics;
}

export type AppEnv = {
  Variables: {
    deps: AppDeps;
    requestId: string;
    operation: string;
    logFields: LogFields;
  };
};

export type AppContext = Context<AppEnv>;

/** Adds fields to this request's log line. */
export function logFields(c: AppContext, fields: LogFields): void {
  c.set("logFields", { ...c.get("logFields"), ...fields });
}

/** The JSON body, validated; an empty body is `{}` (every field of every route is optional). */
export async function jsonBody<S extends v.GenericSchema>(c: AppContext, schema: S): Promise<v.InferOutput<S>> {
  const text = await c.req.text();
  let parsed: unknown = {};
  if (text.trim() !== "") {
    const type = c.req.header("content-type") ?? "";
    if (!/^application\/(?:[\w.+-]+\+)?json\b/i.test(type)) {
      throw new HttpError(400, "invalid_request", `send the body as JSON with Content-Type: application/json (got ${JSON.stringify(type || "none")})`);
    }
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      // V8 quotes a piece of the body in "Unexpected token" messages: keep request data out of answers and logs.
      const why = (err as Error).message.replace(/, (?:\.\.\.)?".*"(?:\.\.\.)? is not valid JSON$/s, "");
      throw new HttpError(400, "invalid_request", `the body is not valid JSON: ${why}`);
    }
    // valibot's object schemas accept arrays: `[]` would pass as `{}`.
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new HttpError(400, "invalid_request", `the body must be a JSON object (got ${parsed === null ? "null" : Array.isArray(parsed) ? "an array" : typeof parsed})`, [{ path: "body", message: "expected a JSON object" }]);
    }
  }
  return validate(schema, parsed, "body");
}

export function validate<S extends v.GenericSchema>(schema: S, value: unknown, where: string): v.InferOutput<S> {
  const result = v.safeParse(schema, value);
  if (!result.success) throw validationError(result.issues, where);
  return result.output;
}
