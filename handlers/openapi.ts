/**
 * GET /openapi.json: an OpenAPI 3.1 document of every route, built from the valibot
 * schemas the handlers validate with. ROUTES is the one list of what the app serves:
 * createApp mounts from it, so the document and the app cannot drift apart.
 */
import { toJsonSchema } from "@valibot/to-json-schema";
import type * as v from "valibot";
import type { AppContext } from "./context.js";
import { BackupBody, DrillResponse, ErrorBody, ImageResponse, ListQuery, PruneBody, RecoveryObjectives, RestoreBody, SnapshotRef } from "./schemas.js";

export interface RouteDoc {
  method: "get" | "post" | "delete";
  /** Hono's form: `/backups/:id`. */
  path: string;
  operation: string;
  summary: string;
  auth: boolean;
  body?: v.GenericSchema;
  query?: v.ObjectSchema<v.ObjectEntries, undefined> | v.StrictObjectSchema<v.ObjectEntries, undefined>;
  /** Success answers: status, description, media type (JSON by default), schema. */
  ok: { status: number; description: string; type?: string; schema?: v.GenericSchema }[];
  /** Error statuses beyond those every route of its kind has (401; 400/413 with a body; 400/404 with an id; 500). */
  errors?: number[];
  /** Answers as NDJSON progress lines with Accept: application/x-ndjson. */
  ndjson?: boolean;
}

const STORE_ERRORS = [503];
export const ROUTES: RouteDoc[] = [
  { method: "get", path: "/", operation: "dashboard", summary: "The web dashboard (HTML; it asks for the token and calls the API with it)", auth: false, ok: [{ status: 200, description: "the page", type: "text/html" }] },
  { method: "get", path: "/health", operation: "health", summary: "Liveness", auth: false, ok: [{ status: 200, description: "alive" }] },
  { method: "get", path: "/ready", operation: "ready", summary: "Readiness: startup restore done and Chroma answers", auth: false, ok: [{ status: 200, description: "ready" }], errors: [503] },
  { method: "get", path: "/openapi.json", operation: "openapi", summary: "This document", auth: false, ok: [{ status: 200, description: "OpenAPI 3.1" }] },
  { method: "get", path: "/metrics", operation: "metrics", summary: "Prometheus metrics", auth: true, ok: [{ status: 200, description: "text exposition format 0.0.4", type: "text/plain" }], errors: STORE_ERRORS },
  { method: "get", path: "/status", operation: "status", summary: "Chroma, the store, the newest backup, the lock, RPO and RTO", auth: true, ok: [{ status: 200, description: "status (rpo and rto among its fields)", schema: RecoveryObjectives }], errors: STORE_ERRORS },
  { method: "get", path: "/backups", operation: "list", summary: "Snapshots, newest first, with their drill results", auth: true, query: ListQuery, ok: [{ status: 200, description: "the snapshots" }], errors: [400, ...STORE_ERRORS] },
  { method: "post", path: "/backups", operation: "backup", summary: "Take a snapshot now", auth: true, body: BackupBody, ndjson: true, ok: [{ status: 201, description: "snapshot taken" }, { status: 200, description: "skipped (unchanged, or younger than ifOlderThan)" }], errors: [409, 502, 503, 507] },
  { method: "get", path: "/backups/:id", operation: "get", summary: "One snapshot, with its drill result", auth: true, ok: [{ status: 200, description: "the snapshot" }], errors: [422, ...STORE_ERRORS] },
  { method: "post", path: "/backups/:id/verify", operation: "verify", summary: "Check every chunk of a snapshot", auth: true, ok: [{ status: 200, description: "the report (ok false names the damaged chunks)" }], errors: [422, ...STORE_ERRORS] },
  { method: "post", path: "/backups/:id/drill", operation: "drill", summary: "Restore drill into scratch collections; the result is kept with the snapshot", auth: true, ok: [{ status: 200, description: "the drill's result (ok false says which check failed and why)", schema: DrillResponse }], errors: [422, 502, 503] },
  { method: "post", path: "/backups/:id/image", operation: "image", summary: "Make a restore image of a snapshot now (in a scratch Chroma; also a restore drill, kept with the snapshot)", auth: true, ok: [{ status: 200, description: "the image, the bytes uploaded for it, and its drill", schema: ImageResponse }], errors: [409, 422, 502, 503, 507] },
  { method: "delete", path: "/backups/:id", operation: "delete", summary: "Forget a snapshot (prune removes its chunks)", auth: true, ok: [{ status: 200, description: "deleted" }], errors: STORE_ERRORS },
  { method: "post", path: "/restore", operation: "restore", summary: "Restore a snapshot into Chroma", auth: true, body: RestoreBody, ndjson: true, ok: [{ status: 200, description: "restored, or not (reason)" }], errors: [404, 409, 422, 502, 503] },
  { method: "post", path: "/restore/skip-startup", operation: "skip-startup", summary: "Open the service without the startup restore's data", auth: true, ok: [{ status: 200, description: "overridden" }], errors: [409] },
  { method: "post", path: "/prune", operation: "prune", summary: "Apply retention (dryRun: say what would go)", auth: true, body: PruneBody, ok: [{ status: 200, description: "what was (or would be) deleted" }], errors: [409, ...STORE_ERRORS] },
];

const ERROR_TEXT: Record<number, string> = {
  400: "invalid request", 401: "missing or wrong bearer token", 404: "no such snapshot or collection", 409: "conflict (the store is locked, a restore is pending, an image is being made, or images are unavailable here)",
  413: "body too large", 422: "snapshot damaged (or, for an image, its checks failed)", 500: "internal error", 502: "Chroma refused a request", 503: "Chroma or the store unavailable (or not ready)", 507: "the store is full",
};

function jsonSchema(schema: v.GenericSchema): Record<string, unknown> {
  // Checks and transforms (durations, id shapes) have no JSON Schema form: described by the base type.
  const { $schema: _, ...rest } = toJsonSchema(schema, { target: "draft-2020-12", errorMode: "ignore", typeMode: "input" }) as Record<string, unknown>;
  return rest;
}

export function openApiPath(path: string): string {
  return path.replace(/:([a-zA-Z]+)/g, "{$1}");
}

function operationDoc(r: RouteDoc): Record<string, unknown> {
  const hasId = r.path.includes(":id");
  const errors = new Set([...(r.errors ?? []), 500, ...(r.auth ? [401] : []), ...(r.body ? [400, 413] : []), ...(hasId ? [400, 404] : [])]);
  const responses: Record<string, unknown> = {};
  for (const ok of r.ok) {
    const type = ok.type ?? "application/json";
    const content: Record<string, unknown> = { [type]: { schema: ok.schema ? jsonSchema(ok.schema) : type === "application/json" ? { type: "object" } : { type: "string" } } };
    if (r.ndjson) content["application/x-ndjson"] = { schema: { type: "string", description: "progress lines, then a done or error line (send Accept: application/x-ndjson)" } };
    responses[String(ok.status)] = { description: ok.description, content };
  }
  for (const status of [...errors].sort()) responses[String(status)] = { $ref: `#/components/responses/E${status}` };
  const parameters: unknown[] = [];
  if (hasId) parameters.push({ name: "id", in: "path", required: true, description: 'a snapshot id (20261124T021530Z-3f9a) or "latest"', schema: jsonSchema(SnapshotRef) });
  if (r.query) {
    const props = (jsonSchema(r.query).properties ?? {}) as Record<string, unknown>;
    for (const [name, schema] of Object.entries(props)) parameters.push({ name, in: "query", required: false, schema });
  }
  return {
    operationId: r.operation,
    summary: r.summary,
    ...(r.auth ? {} : { security: [] }),
    ...(parameters.length ? { parameters } : {}),
    ...(r.body ? { requestBody: { required: false, content: { "application/json": { schema: jsonSchema(r.body) } } } } : {}),
    responses,
  };
}

export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) (paths[openApiPath(r.path)] ??= {})[r.method] = operationDoc(r);
  const errorSchema = jsonSchema(ErrorBody);
  return {
    openapi: "3.1.0",
    info: { title: "chroma-backup", version, description: "Backup and restore service for ChromaDB." },
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "BACKUP_API_TOKEN" } },
      responses: Object.fromEntries(Object.entries(ERROR_TEXT).map(([status, description]) => [`E${status}`, { description, content: { "application/json": { schema: errorSchema } } }])),
    },
  };
}

let cached: { version: string; doc: Record<string, unknown> } | null = null;

export const openapi = (c: AppContext) => {
  const { version } = c.get("deps");
  if (cached?.version !== version) cached = { version, doc: openApiDocument(version) };
  return c.json(cached.doc);
};
