import { env } from "cloudflare:workers";
import { r2Storage } from "../../lib/storage/r2.js";
import { storageConformance } from "../storage/conformance.js";

// Runs inside workerd against miniflare's emulated R2 bucket (BACKUP_BUCKET in wrangler.toml).
storageConformance({ name: "r2 (workerd)", create: async () => ({ storage: r2Storage(env.BACKUP_BUCKET) }) });
