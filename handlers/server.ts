import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { serve, type ServerType } from "@hono/node-server";
import { ChromaRest } from "../lib/chroma/rest.js";
import { startEmbeddedChroma, type EmbeddedChroma } from "../lib/chroma/embedded.js";
import { loadConfig, type Config, type Env } from "../lib/config.js";
import { errorFields, jsonLogger, type Logger } from "../lib/log.js";
import { BackupService } from "../lib/service.js";
import { logSigningStatus } from "../lib/snapshot/signing.js";
import { storageFromConfig } from "../lib/storage/node.js";
import { createApp } from "./app.js";
import { runStartupRestore } from "./startup.js";
import { VERSION } from "./version.js";

export interface RunningService {
  url: string;
  config: Config;
  service: BackupService;
  token: string;
  stop(): Promise<void>;
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

/**
 * Starts everything `npm start` runs: the embedded Chroma unless CHROMA_URL is set, the
 * store, the startup restore (before the server accepts a connection), the HTTP server.
 */
export async function startService(env: Env = process.env, log: Logger = jsonLogger, options: { signal?: AbortSignal } = {}): Promise<RunningService> {
  const { signal } = options;
  const config = loadConfig(env, join);
  config.dataDir = resolve(config.dataDir);
  const { token, generated } = await resolveToken(config, log);
  const storage = await storageFromConfig(config.storage, { log }); // a configuration mistake fails before Chroma starts
  let embedded: EmbeddedChroma | null = null;
  if (!config.chroma.url) {
    embedded = await startEmbeddedChroma({ dataDir: join(config.dataDir, "chroma") });
    log("info", "started the embedded Chroma", { url: embedded.url, dataDir: embedded.dataDir });
  }
  const chroma = new ChromaRest({ url: config.chroma.url ?? embedded!.url, tenant: config.chroma.tenant, database: config.chroma.database, apiKey: config.chroma.apiKey, timeoutMs: config.chroma.timeoutMs });
  const service = BackupService.fromConfig(config, { chroma, storage, log });
  logSigningStatus(service.manifestKeys, log);
  const app = createApp({ service, token, version: VERSION, log });
  const host = config.host ?? (generated ? "127.0.0.1" : "0.0.0.0");

  // A failed startup (e.g. EADDRINUSE) or a stop requested during it must not leave the embedded Chroma running.
  const stopEmbedded = () => void embedded?.stop();
  signal?.addEventListener("abort", stopEmbedded, { once: true });
  let server: ServerType;
  try {
    signal?.throwIfAborted();
    await runStartupRestore(app, token, config.restoreOnStart, log);
    signal?.throwIfAborted();
    server = await new Promise<ServerType>((ready, fail) => {
      const s = serve({ fetch: app.fetch, port: config.port, hostname: host }, () => {
        s.off("error", fail);
        ready(s);
      });
      s.once("error", fail);
    });
  } catch (err) {
    await embedded?.stop();
    throw err;
  } finally {
    signal?.removeEventListener("abort", stopEmbedded);
  }
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const url = `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;
  log("info", "chroma-backup is serving", { url, host, port, storage: storage.driver, prefix: config.storage.prefix, chroma: chroma.url, version: VERSION });

  let stopping: Promise<void> | null = null;
  const stop = () =>
    (stopping ??= (async () => {
      await new Promise<void>((done) => server.close(() => done()));
      await embedded?.stop();
    })());
  return { url, config, service, token, stop };
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${resolve(process.argv[1])}`).href;
if (isMain) {
  // Signal handlers go in first: a stop during startup (e.g. during a long restore) must
  // also stop the embedded Chroma, not leave it running without its parent.
  const starting = new AbortController();
  let running: RunningService | null = null;
  const exitAfterStop = (r: RunningService) =>
    r.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  const shutdown = (signal: string) => {
    jsonLogger("info", "shutting down", { signal });
    if (running) void exitAfterStop(running);
    else starting.abort(new Error(`${signal} during startup`));
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
  startService(process.env, jsonLogger, { signal: starting.signal }).then(
    (r) => {
      running = r;
      if (starting.signal.aborted) void exitAfterStop(r);
    },
    (err: unknown) => {
      if (starting.signal.aborted) {
        jsonLogger("info", "stopped during startup");
        process.exit(0);
      }
      jsonLogger("error", "chroma-backup failed to start", errorFields(err));
      process.exit(1);
    },
  );
}
