import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { serve, type Http2Bindings, type HttpBindings, type ServerType } from "@hono/node-server";
import { startEmbeddedChroma, type EmbeddedChroma } from "../lib/chroma/embedded.js";
import { imageForRestore } from "../lib/images/startup.js";
import { ChromaGate } from "../lib/chroma/gate.js";
import { AutoBackup } from "../lib/auto-backup.js";
import { DrillSchedule } from "../lib/drill.js";
import { ASIDE_STALE_MS, sweepAsideCollections } from "../lib/snapshot/aside.js";
import { loadConfig, type Config, type Env } from "../lib/config.js";
import { errorFields, jsonLogger, type Logger } from "../lib/log.js";
import type { BackupService } from "../lib/service.js";
import { logSigningStatus } from "../lib/snapshot/signing.js";
import { storageFromConfig } from "../lib/storage/node.js";
import { createStartingApp } from "../handlers/starting.js";
import { VERSION } from "../handlers/version.js";
import { compose } from "./compose.js";
import { embeddedImageMaking } from "./images.js";
import type { Readiness } from "./readiness.js";
import { runChild, waitUntilReady } from "./run.js";
import { removeServiceFile, writeServiceFile } from "./service-file.js";
import { restoreUntilDone, startEmbeddedForRestore } from "./startup-restore.js";

export interface RunningService {
  /** The backup API. */
  url: string;
  /** Where apps reach Chroma: CHROMA_HOST:CHROMA_PORT for the embedded one, else CHROMA_URL. */
  chromaUrl: string;
  config: Config;
  service: BackupService;
  token: string;
  /** What `GET /ready` answers. */
  readiness(): Promise<Readiness>;
  /** Resolves when the startup restore is over: restored or not needed ("done", "none"), skipped by an operator, or stopped. */
  restored: Promise<"none" | "done" | "overridden" | "aborted">;
  /** Runs the on-stop hooks, stops the HTTP server and the embedded Chroma, removes DATA_DIR/service.json. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Aborting it during startup stops what was started (the embedded Chroma). */
  signal?: AbortSignal;
  /** Backoff of the startup restore's retries (tests shorten it). */
  restoreRetry?: { initialDelayMs?: number; maxDelayMs?: number };
}

/** The token from the environment, else the one kept in DATA_DIR/api-token, else a new one (printed once). */
async function resolveToken(config: Config, log: Logger): Promise<{ token: string; generated: boolean }> {
  if (config.token) return { token: config.token, generated: false };
  const path = join(config.dataDir, "api-token");
  try {
    const saved = (await readFile(path, "utf8")).trim();
    if (saved) return { token: saved, generated: true };
  } catch {
    // first start
  }
  const token = randomBytes(24).toString("base64url");
  await mkdir(config.dataDir, { recursive: true });
  await writeFile(path, token + "\n", { mode: 0o600 });
  await chmod(path, 0o600);
  // Printed once, on purpose: this is how the operator learns it. Never logged again.
  console.log(`\nGenerated an API token (saved in ${path}, mode 0600):\n\n  ${token}\n\nSet BACKUP_API_TOKEN to choose your own.\n`);
  log("info", "generated an API token", { path });
  return { token, generated: true };
}

type Handler = (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response>;

function listen(fetch: Handler, port: number, hostname: string): Promise<ServerType> {
  return new Promise<ServerType>((ready, fail) => {
    const s = serve({ fetch, port, hostname }, () => {
      s.off("error", fail);
      ready(s);
    });
    s.once("error", fail);
  });
}

/**
 * Starts everything `npm start` runs: the store, the HTTP server (at first answering only
 * /health and /ready: handlers/starting.ts), the embedded Chroma unless CHROMA_URL is set
 * (placed from a restore image when one fits), the backup API, then the startup restore,
 * retried with backoff until it succeeds while the API serves (`/ready` is 503 meanwhile).
 * Writes DATA_DIR/service.json once the API serves. A failure or a stop during startup
 * leaves nothing running.
 */
export async function startService(env: Env = process.env, log: Logger = jsonLogger, options: StartOptions = {}): Promise<RunningService> {
  const { signal } = options;
  const config = loadConfig(env, join);
  config.dataDir = resolve(config.dataDir);
  const { token, generated } = await resolveToken(config, log);
  const storage = await storageFromConfig(config.storage, { log }); // a configuration mistake fails before Chroma starts
  const host = config.host ?? (generated ? "127.0.0.1" : "0.0.0.0");
  // Listening comes first, so that the port is known to be free before a long image
  // download, and platform health checks get /health and a 503 /ready with the startup's
  // step (the last thing it logged) instead of a refused connection meanwhile.
  let startingStep = "the embedded Chroma is starting";
  const startingApp = createStartingApp({ token, version: VERSION, reason: () => `startup restore running: ${startingStep}` });
  let handle: Handler = (request, env) => startingApp.fetch(request, env);
  signal?.throwIfAborted();
  const server = await listen((request, env) => handle(request, env), config.port, host);
  const closeServer = () => new Promise<void>((done) => server.close(() => done()));
  let embedded: EmbeddedChroma | null = null;
  let gate: ChromaGate | null = null;
  let gateError: string | null = null;
  let chromaUrl = config.chroma.url;
  let restoredFromImage: Awaited<ReturnType<typeof startEmbeddedForRestore>>["fromImage"] = null;
  /** A failure or a stop before the API serves: nothing is left running. */
  const abandon = async (err: unknown): Promise<never> => {
    await embedded?.stop();
    await closeServer();
    throw err;
  };
  if (!chromaUrl) {
    // Chroma listens on a private loopback port; apps reach it through the gate at
    // CHROMA_HOST:CHROMA_PORT, which opens only once the startup restore is over.
    const stepLog: Logger = (level, message, fields) => {
      startingStep = message.replace(/^startup restore: /, "");
      log(level, message, fields);
    };
    let startedEmbedded: Awaited<ReturnType<typeof startEmbeddedForRestore>>;
    try {
      startedEmbedded = await startEmbeddedForRestore(config, storage, stepLog, signal);
    } catch (err) {
      return abandon(err);
    }
    const { chroma: started, fromImage } = startedEmbedded;
    restoredFromImage = fromImage;
    embedded = started;
    chromaUrl = started.url;
    gate = new ChromaGate({ host: config.chromaServe.host, port: config.chromaServe.port, target: () => started.url, log, isUp: () => started.up });
    log("info", "started the embedded Chroma", { url: started.url, version: started.version, dataDir: started.dataDir, servedAt: `${config.chromaServe.host}:${config.chromaServe.port}` });
  }
  const appChromaUrl = config.chroma.url ?? `http://${config.chromaServe.host}:${config.chromaServe.port}`;
  const notReady = () => {
    if (gateError) return gateError;
    if (embedded && !embedded.up) return "the embedded Chroma is down and being restarted";
    if (gate && !gate.isOpen) return "the Chroma gate is not open yet";
    return null;
  };
  const images = embedded ? embeddedImageMaking(config, embedded.version, (dataDir) => startEmbeddedChroma({ dataDir, log })) : undefined;
  let composed: ReturnType<typeof compose>;
  try {
    composed = compose(config, { storage, chromaUrl, token, log, notReady, images });
  } catch (err) {
    return abandon(err);
  }
  const { app, service, readiness, chroma } = composed;
  const runningChroma = embedded;
  if (runningChroma) service.chromaServerVersion = () => runningChroma.version;
  logSigningStatus(service.manifestKeys, log);
  if (embedded && config.images.enabled) {
    const version = embedded.version;
    service.imageForRestore = (snapshot) => imageForRestore(storage, snapshot, version, service.manifestKeys);
  }
  // Collections an interrupted restore built aside: all of them on the embedded Chroma (nothing
  // else writes to it); on a shared one only stale ones (another instance may be building one).
  await sweepAsideCollections(chroma, log, { olderThanMs: embedded ? 0 : ASIDE_STALE_MS }).catch((err: unknown) => log("warn", "could not sweep aside collections at start", errorFields(err)));
  const autoBackup = new AutoBackup({
    service,
    intervalSeconds: config.backupIntervalSeconds,
    changeSignal: gate ? () => gate.writes : undefined,
    log,
    onStopTimeoutSeconds: config.backupOnStopTimeoutSeconds,
  });
  if (config.restoreOnStart !== "never") service.markStartupRestore("running");

  if (signal?.aborted) return abandon(signal.reason);
  handle = (request, env) => app.fetch(request, env);
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const url = `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;
  await writeServiceFile(config.dataDir, { url, pid: process.pid, started: new Date().toISOString(), version: VERSION });
  log("info", "chroma-backup is serving", { url, host, port, storage: storage.driver, prefix: config.storage.prefix, chroma: appChromaUrl, version: VERSION });

  const retries = new AbortController();
  let restoredData = false;
  let restored: Promise<"none" | "done" | "overridden" | "aborted">;
  if (restoredFromImage) {
    // The image, caught up to the newest snapshot, was the startup restore (runtime/startup-restore.ts).
    service.markStartupRestore("done", `restored snapshot ${restoredFromImage.snapshot} from the image of ${restoredFromImage.image} in ${restoredFromImage.timings.totalMs} ms`);
    restoredData = true;
    restored = Promise.resolve("done");
  } else {
    restored = restoreUntilDone(app, service, token, config.restoreOnStart, log, {
      ...options.restoreRetry,
      signal: retries.signal,
      onSuccess: (answer) => (restoredData = answer.restored === true),
    });
  }
  void restored.then(async (state) => {
    if (state === "aborted") return;
    log("info", "the startup restore is over", { state: service.startupRestore.state, lastError: service.startupRestore.lastError });
    if (gate) {
      try {
        await gate.open(state === "overridden" ? "an operator skipped the startup restore" : "the startup restore is over");
      } catch (err) {
        gateError = `apps cannot reach Chroma: ${(err as Error).message}`;
        log("error", "the Chroma gate could not open", errorFields(err));
      }
    }
    // Only a restore that put the newest snapshot back vouches for the data; a Chroma that
    // kept its own data (a disk that survived) may hold changes no snapshot has.
    if (restoredData) autoBackup.markProtected();
    autoBackup.start();
    drills?.start();
  });
  // DRILL_INTERVAL: a restore drill of the newest snapshot into scratch collections.
  const drills = config.drillIntervalSeconds ? new DrillSchedule(() => service.drill("latest"), config.drillIntervalSeconds * 1000, log) : null; // the drill logs its own result
  const stopHooks: (() => Promise<void>)[] = [
    async () => {
      drills?.stop();
      await service.stopImages(); // an image build under way is abandoned; the on-stop backup starts none
      await gate?.close(); // no app write may land after the on-stop backup read its data
      const result = await autoBackup.backupOnStop();
      log(result.outcome === "timeout" || result.outcome === "failed" ? "error" : "info", "on-stop backup", { ...result });
    },
  ];

  let stopping: Promise<void> | null = null;
  const stop = () =>
    (stopping ??= (async () => {
      retries.abort();
      const closed = closeServer();
      if ("closeIdleConnections" in server) server.closeIdleConnections();
      for (const hook of stopHooks) {
        try {
          await hook();
        } catch (err) {
          log("error", "an on-stop hook failed", errorFields(err));
        }
      }
      await embedded?.stop();
      await removeServiceFile(config.dataDir, process.pid);
      await closed;
    })());
  return { url, chromaUrl: appChromaUrl, config, service, token, readiness, restored, stop };
}

/**
 * The process main of `npm start [-- CMD ...]` and `chroma-backup run [-- CMD ...]`:
 * starts the service; with CMD, starts it once ready and lives as long as it does (see
 * run.ts); without, serves until SIGTERM/SIGINT.
 */
export async function serveProcess(argv: string[], log: Logger = jsonLogger): Promise<never> {
  const command = argv[0] === "--" ? argv.slice(1) : argv;
  // Signal handlers go in first: a stop during startup must also stop the embedded Chroma.
  const starting = new AbortController();
  let running: RunningService | null = null;
  let child: ReturnType<typeof runChild> | null = null;
  let exiting = false;
  const exitAfterStop = (code: number) => {
    if (exiting) return;
    exiting = true;
    void (running ? running.stop() : Promise.resolve()).then(
      () => process.exit(code),
      (err: unknown) => {
        log("error", "stopping failed", errorFields(err));
        process.exit(code || 1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (child) return child.forward(signal); // its exit takes the shutdown path
    if (signal === "SIGHUP") return;
    log("info", "shutting down", { signal });
    if (running) exitAfterStop(0);
    else starting.abort(new Error(`${signal} during startup`));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  if (command.length > 0) process.on("SIGHUP", onSignal);
  try {
    running = await startService(process.env, log, { signal: starting.signal });
  } catch (err) {
    if (starting.signal.aborted) {
      log("info", "stopped during startup");
      process.exit(0);
    }
    log("error", "chroma-backup failed to start", errorFields(err));
    process.exit(1);
  }
  if (starting.signal.aborted) exitAfterStop(0);
  if (command.length > 0 && !exiting) {
    const ready = await waitUntilReady(running, log, () => exiting);
    if (ready && !exiting) {
      child = runChild(command, running, log);
      void child.exitCode.then((code) => exitAfterStop(code));
    }
  }
  return new Promise<never>(() => {});
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${resolve(process.argv[1])}`).href;
if (isMain) void serveProcess(process.argv.slice(2));
