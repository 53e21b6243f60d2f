/**
 * The library surface: mount the handlers in another Hono or Node app, call
 * `backupIfDue()` after a document upload, or run the startup hook yourself.
 */
export { createApp } from "./app.js";
export type { AppDeps } from "./context.js";
export { startService, type RunningService } from "./server.js";
export { runStartupRestore } from "./startup.js";
export { BackupService, type BackupOutcome, type BackupRequest, type RestoreOutcome, type RestoreRequest } from "../lib/service.js";
export { ChromaRest } from "../lib/chroma/rest.js";
export { loadConfig } from "../lib/config.js";
export { storageFromConfig } from "../lib/storage/node.js";
