/**
 * The package's entry (`import ... from "chroma-backup"`, compiled to dist/index.mjs):
 * start what `npm start` starts, mount the handlers in another Hono or Node app, call
 * `backupIfDue()` after a document upload, or build the service yourself.
 */
export { createApp } from "./handlers/app.js";
export type { AppDeps } from "./handlers/context.js";
export { startService, type RunningService, type StartOptions } from "./runtime/node.js";
export { compose, type Composed, type RuntimeParts } from "./runtime/compose.js";
export { runStartupRestore, restoreUntilDone } from "./runtime/startup-restore.js";
export { BackupService, type BackupOutcome, type BackupRequest, type RestoreOutcome, type RestoreRequest } from "./lib/service.js";
export { ChromaRest } from "./lib/chroma/rest.js";
export { loadConfig } from "./lib/config.js";
export { storageFromConfig } from "./lib/storage/node.js";
