import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { freePort, startEmbeddedChroma, type EmbeddedChroma } from "../lib/chroma/embedded.js";
import { loadConfig, type Env } from "../lib/config.js";
import { BackupError } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import { storageFromConfig } from "../lib/storage/node.js";
import { compose } from "../runtime/compose.js";
import { CliError, EXIT } from "./exit.js";
import { requestInit, type Transport } from "./transport.js";

/**
 * The service's app in this process, composed as the Node runtime composes it (config
 * from the environment, storage, Chroma, BackupService, app) but not listening, with a
 * throwaway in-memory token. Without CHROMA_URL the embedded Chroma (DATA_DIR/chroma) is
 * started on the first request that reaches Chroma, so `list` or `verify` never start it.
 */
export async function inProcessTransport(env: Env, log: Logger): Promise<Transport> {
  let config;
  try {
    config = loadConfig(env, join);
  } catch (err) {
    throw new CliError((err as Error).message, err instanceof BackupError ? EXIT.usage : EXIT.failure, { cause: err });
  }
  config.dataDir = resolve(config.dataDir);
  let embedded: Promise<EmbeddedChroma> | null = null;
  let chromaUrl = config.chroma.url;
  let chromaFetch: typeof fetch | undefined;
  if (!chromaUrl) {
    const port = await freePort();
    chromaUrl = `http://127.0.0.1:${port}`;
    const dataDir = join(config.dataDir, "chroma");
    chromaFetch = async (input, init) => {
      embedded ??= startEmbeddedChroma({ dataDir, port }).then((e) => {
        log("info", "started the embedded Chroma", { url: e.url, dataDir: e.dataDir });
        return e;
      });
      await embedded;
      return fetch(input, init);
    };
  }
  let storage;
  try {
    storage = await storageFromConfig(config.storage, { log });
  } catch (err) {
    throw new CliError((err as Error).message, err instanceof BackupError ? EXIT.usage : EXIT.unavailable, { cause: err });
  }
  const token = randomBytes(24).toString("base64url");
  const { app } = compose(config, { storage, chromaUrl, chromaFetch, token, log, holder: `chroma-backup-cli-${process.pid}` });
  return {
    describe: "in-process",
    request: async (method, path, options = {}) => app.request(path, requestInit(method, token, options)),
    async close() {
      const running = embedded ? await embedded.catch(() => null) : null;
      await running?.stop();
    },
  };
}
