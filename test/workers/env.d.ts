import type * as MainModule from "../../runtime/worker.js";

declare global {
  namespace Cloudflare {
    // Bindings and vars from wrangler.toml, as seen by `import { env } from "cloudflare:workers"`.
    interface Env {
      BACKUP_BUCKET: R2Bucket;
      CHROMA_URL: string;
      STORAGE_PREFIX: string;
      RETENTION_KEEP_LAST: string;
      RETENTION_KEEP_DAILY: string;
      RETENTION_KEEP_SAFETY: string;
      BACKUP_MIN_INTERVAL: string;
    }
    // The pool's `main` (vitest.config.ts), as seen by `import { exports } from "cloudflare:workers"`.
    interface GlobalProps {
      mainModule: typeof MainModule;
    }
  }
}
