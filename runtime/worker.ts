/**
 * The Cloudflare Worker entry: the same Hono app and routes as the Node server, over an
 * R2 bucket, plus a cron-triggered prune. Only portable modules are imported here (no
 * fs, replit driver or embedded Chroma): `npm run build:worker` fails if one sneaks in.
 */
import { loadConfig, type Config } from "../lib/config.js";
import { errorFields, jsonLogger } from "../lib/log.js";
import type { BackupService } from "../lib/service.js";
import { withPrefix } from "../lib/storage/prefixed.js";
import { r2Storage, type R2BucketLike } from "../lib/storage/r2.js";
import { errorBody } from "../handlers/errors.js";
import { VERSION } from "../handlers/version.js";
import { compose, type Composed } from "./compose.js";
import { retryingStorage } from "../lib/storage/retry.js";
import { countedBucket, countedFetch, subrequestLimit, withSubrequestBudget } from "./worker-subrequests.js";

export interface WorkerEnv {
  BACKUP_BUCKET: R2BucketLike;
  BACKUP_API_TOKEN?: string;
  /** A secret (wrangler secret put SNAPSHOT_SIGNING_KEY): signs and checks snapshot manifests. */
  SNAPSHOT_SIGNING_KEY?: string;
  CHROMA_URL?: string;
  /** Subrequests allowed per request (Cloudflare: 50 free, 10,000 paid by default, `limits.subrequests`); default 10,000. */
  SUBREQUEST_LIMIT?: string;
  [name: string]: unknown;
}

interface Built {
  config: Config;
  service: BackupService;
  app: Composed["app"];
  subrequestLimit: number;
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
  const limit = subrequestLimit(env.SUBREQUEST_LIMIT);
  // Every R2 call and fetch to Chroma counts against the request's subrequest budget (worker-subrequests.ts).
  const storage = withPrefix(retryingStorage(r2Storage(countedBucket(env.BACKUP_BUCKET)), { timeoutMs: config.storage.timeoutMs, log: jsonLogger }), config.storage.prefix);
  // No token, no service: a Worker cannot generate and show one the way `npm start` does.
  const token = config.token ?? "";
  // No startup restore here (startupRestore stays "none"): /ready is Chroma's heartbeat.
  const { service, app } = compose(config, { storage, chromaUrl: config.chroma.url, chromaFetch: countedFetch, token, log: jsonLogger, holder: `worker-${crypto.randomUUID().slice(0, 8)}` });
  return { config, service, app, subrequestLimit: limit };
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
    return withSubrequestBudget(worker.subrequestLimit, () => worker.app.fetch(request));
  },

  /** The cron trigger: prune with the configured retention rules, and log the result. */
  async scheduled(_controller: unknown, env: WorkerEnv): Promise<void> {
    let built: Built;
    try {
      built = build(env);
    } catch (err) {
      jsonLogger("error", "scheduled backup and prune failed", { operation: "scheduled", outcome: "error", ...errorFields(err) });
      throw err;
    }
    await withSubrequestBudget(built.subrequestLimit, () => runScheduled(built));
  },
};

/** The cron's work: the automatic backup (when configured), then the prune. */
async function runScheduled({ service, config }: Built): Promise<void> {
  // The automatic backup (BACKUP_INTERVAL=off leaves the cron to prune only). Nothing is
  // held between invocations, so the backup's own unchanged check decides: unchanged data
  // commits nothing. A failed backup is logged and does not keep the prune from running.
  let backupFailed: unknown = null;
  if (config.backupIntervalSeconds !== null) {
    try {
      const outcome = await service.backup({ automatic: true });
      if (outcome.skipped) jsonLogger("info", "scheduled backup skipped", { operation: "backup", outcome: "skipped", reason: outcome.reason, latest: outcome.latest.id });
      else jsonLogger("info", "scheduled backup", { operation: "backup", outcome: "ok", snapshot: outcome.snapshot.id, records: outcome.snapshot.records, newBytes: outcome.snapshot.newBytes, warnings: outcome.manifest.warnings });
    } catch (err) {
      backupFailed = err;
      jsonLogger("error", "scheduled backup failed", { operation: "backup", outcome: "error", ...errorFields(err) });
    }
  }
  try {
    const result = await service.prune();
    jsonLogger("info", "scheduled prune", { operation: "prune", outcome: "ok", deleted: result.deleted, chunksDeleted: result.chunksDeleted, bytesFreed: result.bytesFreed, remaining: result.remaining, warnings: result.warnings });
  } catch (err) {
    jsonLogger("error", "scheduled prune failed", { operation: "prune", outcome: "error", ...errorFields(err) });
    throw err;
  }
  // Rethrown so the failed run shows in the cron's status.
  if (backupFailed) throw backupFailed;
}
