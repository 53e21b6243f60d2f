import { ChromaRest, type ChromaConfig } from "../lib/chroma/rest.js";
import type { Config } from "../lib/config.js";
import type { Logger } from "../lib/log.js";
import { BackupService, type ImageMaking } from "../lib/service.js";
import type { Storage } from "../lib/storage/types.js";
import { createApp } from "../handlers/app.js";
import { VERSION } from "../handlers/version.js";
import { readinessProbe, type Readiness } from "./readiness.js";

/** What a runtime brings that configuration alone cannot: its store, where Chroma is, its token. */
export interface RuntimeParts {
  storage: Storage;
  /** The Chroma the service protects (the embedded one's own address, not the app-facing gate). */
  chromaUrl: string;
  /** For a Chroma started on first use (the CLI's in-process transport). */
  chromaFetch?: typeof fetch;
  token: string;
  log: Logger;
  /** Names this process in the store's lock. */
  holder?: string;
  /** Making restore images (Node with the embedded Chroma: runtime/images.ts); absent elsewhere. */
  images?: ImageMaking;
  /** A reason the runtime is not ready besides the startup restore and Chroma's heartbeat. */
  notReady?: () => string | null;
}

export interface Composed {
  config: Config;
  chroma: ChromaRest;
  service: BackupService;
  app: ReturnType<typeof createApp>;
  readiness: () => Promise<Readiness>;
}

/** config -> Chroma client -> service -> app: the one place every runtime (Node, Worker, CLI, `run`) builds them. */
export function compose(config: Config, parts: RuntimeParts): Composed {
  const chromaConfig: ChromaConfig = { url: parts.chromaUrl, tenant: config.chroma.tenant, database: config.chroma.database, apiKey: config.chroma.apiKey, timeoutMs: config.chroma.timeoutMs, fetch: parts.chromaFetch };
  const chroma = new ChromaRest(chromaConfig);
  const service = BackupService.fromConfig(config, { chroma, storage: parts.storage, log: parts.log, holder: parts.holder, images: parts.images });
  const readiness = readinessProbe(service, chromaConfig, parts.notReady);
  const app = createApp({ service, token: parts.token, version: VERSION, log: parts.log, readiness });
  return { config, chroma, service, app, readiness };
}
