import { join } from "node:path";
import type { Hono } from "hono";
import { startEmbeddedChroma, type EmbeddedChroma } from "../lib/chroma/embedded.js";
import { loadableChromaVersion } from "../lib/chroma/launcher.js";
import { ChromaRest } from "../lib/chroma/rest.js";
import type { Config, RestoreOnStart } from "../lib/config.js";
import { clearUnfinishedImage, isEmptyDir, restoreFromImage, type ImageStartupOutcome } from "../lib/images/startup.js";
import type { Logger } from "../lib/log.js";
import type { BackupService } from "../lib/service.js";
import { ManifestKeys } from "../lib/snapshot/signing.js";
import type { Storage } from "../lib/storage/types.js";
import type { AppEnv } from "../handlers/context.js";

/** Present while an image is placed and caught up (lib/images/startup.ts clearUnfinishedImage). */
export const IMAGE_MARKER_FILE = "image-restore.json";

/**
 * Starts the embedded Chroma (DATA_DIR/chroma) for `npm start`, from a restore image when
 * one can serve the startup restore: IMAGES=on, RESTORE_ON_START would restore (`if-empty`
 * or `always`) and the directory is missing or empty (`always` over data keeps the logical
 * restore, which takes a safety snapshot first). With `fromImage` the startup restore is
 * done; without, the caller restores logically as before (the reason was logged).
 */
export async function startEmbeddedForRestore(config: Config, storage: Storage, log: Logger, signal?: AbortSignal): Promise<{ chroma: EmbeddedChroma; fromImage: Extract<ImageStartupOutcome, { used: true }> | null }> {
  const dataDir = join(config.dataDir, "chroma");
  const markerPath = join(config.dataDir, IMAGE_MARKER_FILE);
  const start = () => startEmbeddedChroma({ dataDir, log });
  await clearUnfinishedImage(dataDir, markerPath, log);
  if (!config.images.enabled || config.restoreOnStart === "never") return { chroma: await start(), fromImage: null };
  if (!(await isEmptyDir(dataDir))) {
    log("info", "startup restore: no image used, DATA_DIR/chroma holds data (the restore handler decides)", { dataDir, restoreOnStart: config.restoreOnStart });
    return { chroma: await start(), fromImage: null };
  }
  const keys = new ManifestKeys(config.signingKeys);
  const chromaConfig = { tenant: config.chroma.tenant, database: config.chroma.database, timeoutMs: config.chroma.timeoutMs };
  const outcome = await restoreFromImage({
    storage,
    dataDir,
    markerPath,
    chromaVersion: loadableChromaVersion(), // probed while the store is read and the download starts
    keys,
    startChroma: start,
    client: (url) => new ChromaRest({ url, ...chromaConfig }),
    log,
    signal,
  });
  if (outcome.used) return { chroma: outcome.chroma, fromImage: outcome };
  log("info", "startup restore: restoring logically (no usable image)", { reason: outcome.reason });
  return { chroma: await start(), fromImage: null };
}

interface RestoreAnswer {
  restored?: boolean;
  reason?: string;
  snapshot?: string;
  collections?: unknown[];
  skipped?: { id: string; reason: string }[];
  error?: { code?: string; message?: string };
}

/**
 * One attempt of the startup hook: asks the restore handler to put the newest snapshot
 * back (`if-empty`: only into an empty Chroma; `always`: replace, after a safety
 * snapshot). The newest snapshot that verifies is used; any newer one that does not is
 * skipped and logged loudly. A failure is logged loudly and leaves Chroma as it was
 * (restores build collections aside and swap them in only when complete).
 */
async function attempt(app: Hono<AppEnv>, token: string, mode: Exclude<RestoreOnStart, "never">, log: Logger): Promise<{ ok: boolean; body: RestoreAnswer }> {
  const response = await app.request("/restore", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ snapshot: "latest", ifEmpty: mode === "if-empty", fallbackToVerified: true }),
  });
  const body = (await response.json()) as RestoreAnswer;
  for (const skipped of body.skipped ?? []) {
    log("error", "STARTUP RESTORE SKIPPED A DAMAGED SNAPSHOT", { snapshot: skipped.id, reason: skipped.reason, restoring: body.snapshot ?? null });
  }
  if (!response.ok) return { ok: false, body };
  if (body.restored) log("info", "startup restore: restored the newest snapshot", { snapshot: body.snapshot, collections: body.collections, skipped: body.skipped });
  else log("info", "startup restore: nothing restored", { reason: body.reason, snapshot: body.snapshot });
  return { ok: true, body };
}

/** A single startup restore attempt (no retries); returns the restore handler's answer. */
export async function runStartupRestore(app: Hono<AppEnv>, token: string, mode: RestoreOnStart, log: Logger): Promise<unknown> {
  if (mode === "never") {
    log("info", "startup restore skipped (RESTORE_ON_START=never)");
    return null;
  }
  const { ok, body } = await attempt(app, token, mode, log);
  if (!ok) log("error", "STARTUP RESTORE FAILED: Chroma was left as it was", { error: body.error });
  return body;
}

export interface RetryOptions {
  /** First wait after a failure; doubles up to maxDelayMs. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Stops the retries (the service is stopping). */
  signal?: AbortSignal;
  /** Called with the restore handler's answer of the attempt that succeeded. */
  onSuccess?: (answer: RestoreAnswer) => void;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/**
 * The startup restore until it succeeds: each failure is logged at error level and retried
 * after a backoff (1 s doubling to 60 s by default), forever, while the HTTP API serves and
 * `/ready` says why. Tracks its state in `service.markStartupRestore`; stops when an operator
 * overrides it (`POST /restore/skip-startup`) or `signal` aborts. Resolves with the final state.
 */
export async function restoreUntilDone(app: Hono<AppEnv>, service: BackupService, token: string, mode: RestoreOnStart, log: Logger, options: RetryOptions = {}): Promise<"none" | "done" | "overridden" | "aborted"> {
  if (mode === "never") {
    log("info", "startup restore skipped (RESTORE_ON_START=never)");
    service.markStartupRestore("none", "RESTORE_ON_START=never");
    return "none";
  }
  const { signal, initialDelayMs = 1000, maxDelayMs = 60_000 } = options;
  const state = () => service.startupRestore.state; // changed by POST /restore/skip-startup meanwhile
  let delay = initialDelayMs;
  for (let attempts = 1; ; attempts++) {
    if (state() === "overridden") return "overridden";
    if (signal?.aborted) return "aborted";
    // Retries stay "failed" (another failure counts as an attempt): /ready keeps the reason.
    if (state() !== "failed") service.markStartupRestore("running");
    let ok = false;
    let why: string;
    let answer: RestoreAnswer | undefined;
    try {
      const result = await attempt(app, token, mode, log);
      ok = result.ok;
      answer = result.body;
      why = result.body.error?.message ?? result.body.error?.code ?? "unknown error";
    } catch (err) {
      why = (err as Error).message;
    }
    if (state() === "overridden") {
      log("warn", "startup restore: an attempt ended after an operator skipped it; the state stays overridden", { succeeded: ok });
      return "overridden";
    }
    if (ok) {
      options.onSuccess?.(answer!);
      service.markStartupRestore("done");
      return "done";
    }
    service.markStartupRestore("failed", why);
    log("error", "STARTUP RESTORE FAILED: Chroma was left as it was; retrying (POST /restore/skip-startup opens the service without the data)", { attempt: attempts, error: why, retryInMs: delay });
    await sleep(delay, signal);
    delay = Math.min(delay * 2, maxDelayMs);
  }
}
