// Bindings from wrangler.toml, as seen by `import { env } from "cloudflare:workers"`.
declare namespace Cloudflare {
  interface Env {
    BACKUP_BUCKET: R2Bucket;
  }
}
