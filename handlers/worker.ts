/**
 * The Cloudflare Worker entry: the same Hono app and routes as the Node server, over an
 * R2 bucket, plus a cron-triggered prune. Only portable modules are imported here (no
 * fs, replit driver or embedded Chroma): `npm run build:worker` fails if one sneaks in.
 */
import { ChromaRest } from "../lib/chroma/rest.js";
import { loadConfig, type Config } from "../lib/config.js";
import { errorFields, jsonLogger } from "../lib/log.js";
import { BackupService } from "../lib/service.js";
import { withPrefix } from "../lib/storage/prefixed.js";
import { r2Storage, type R2BucketLike } from "../lib/storage/r2.js";
import { retryingStorage } from "../lib/storage/retry.js";
import { createApp } from "./app.js";
import { errorBody } from "./errors.js";
import { VERSION } from "./version.js";

export interface WorkerEnv {
  BACKUP_BUCKET: R2BucketLike;
  BACKUP_API_TOKEN?: string;
  /** A secret (wrangler secret put SNAPSHOT_SIGNING_KEY): signs and checks snapshot manifests. */
  SNAPSHOT_SIGNING_KEY?: string;
  CHROMA_URL?: string;
  [name: string]: unknown;
}

interface Built {
  config: Config;
  service: BackupService;
  app: ReturnType<typeof createApp>;
}

/**
 * The app for one env object. Workers hand the same env to every request of an isolate,
 * so configuration, service and app are built once per isolate, not per request.
 */
const built = new WeakMap<WorkerEnv, Built>();

function build(env: WorkerEnv): Built {
  let cached = built.get(env);
  if (!cached) {
    cached = buildFresh(env);
    built.set(env, cached);
  }
  return cached;
}

function buildFresh(env: WorkerEnv): Built {
  const vars = Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => typeof e[1] === "string"));
  const config = loadConfig({ ...vars, STORAGE: "r2" });
  if (!config.chroma.url) throw new Error("set CHROMA_URL (a Chroma reachable over HTTP) in wrangler.toml [vars] or as a secret");
  const chroma = new ChromaRest({ url: config.chroma.url, tenant: config.chroma.tenant, database: config.chroma.database, apiKey: config.chroma.apiKey, timeoutMs: config.chroma.timeoutMs });
  const storage = withPrefix(retryingStorage(r2Storage(env.BACKUP_BUCKET), { timeoutMs: config.storage.timeoutMs, log: jsonLogger }), config.storage.prefix);
  const service = BackupService.fromConfig(config, { chroma, storage, log: jsonLogger, holder: `worker-${crypto.randomUUID().slice(0, 8)}` });
  // No token, no service: a Worker cannot generate and show one the way `npm start` does.
  const token = config.token ?? "";
  return { config, service, app: createApp({ service, token, version: VERSION, log: jsonLogger }) };
}

export default {
  async fetch(request: Request, env: WorkerEnv): Promise<Response> {
    // Liveness answers even when the configuration is broken.
    if (request.method === "GET" && new URL(request.url).pathname === "/health") return Response.json({ ok: true, version: VERSION });
    let worker: Built;
    try {
      worker = build(env);
    } catch (err) {
      return Response.json(errorBody({ status: 500, code: "misconfigured", message: (err as Error).message }), { status: 500 });
    }
    if (!worker.config.token) {
      return Response.json(errorBody({ status: 500, code: "misconfigured", message: "set the BACKUP_API_TOKEN secret (wrangler secret put BACKUP_API_TOKEN)" }), { status: 500 });
    }
    return worker.app.fetch(request);
  },

  /** The cron trigger: prune with the configured retention rules, and log the result. */
  async scheduled(_controller: unknown, env: WorkerEnv): Promise<void> {
    try {
      const { service } = build(env);
      const result = await service.prune();
      jsonLogger("info", "scheduled prune", { operation: "prune", outcome: "ok", deleted: result.deleted, chunksDeleted: result.chunksDeleted, bytesFreed: result.bytesFreed, remaining: result.remaining, warnings: result.warnings });
    } catch (err) {
      jsonLogger("error", "scheduled prune failed", { operation: "prune", outcome: "error", ...errorFields(err) });
      throw err;
    }
  },
};
