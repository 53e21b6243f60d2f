import type { BackupOutcome } from "../lib/service.js";
import { jsonBody, logFields, type AppContext } from "./context.js";
import { runWithProgress } from "./progress.js";
import { BackupBody } from "./schemas.js";

export const createBackup = async (c: AppContext) => {
  const body = await jsonBody(c, BackupBody);
  const { service } = c.get("deps");
  return runWithProgress(
    c,
    async (onProgress) => {
      // The request's signal aborts when the client disconnects: the backup stops and commits nothing.
      const outcome = await service.backup(body, onProgress, c.req.raw.signal);
      logOutcome(c, outcome);
      return outcome;
    },
    (outcome) =>
      outcome.skipped
        ? { status: 200, body: { skipped: true, reason: outcome.reason, latest: outcome.latest, ...(outcome.message ? { message: outcome.message } : {}), ...(outcome.scheduledAt ? { scheduledAt: outcome.scheduledAt } : {}) } }
        : { status: 201, body: { ...outcome.snapshot, skipped: false, warnings: outcome.manifest.warnings, retention: outcome.retention && { deleted: outcome.retention.deleted, chunksDeleted: outcome.retention.chunksDeleted, bytesFreed: outcome.retention.bytesFreed } } },
  );
};

function logOutcome(c: AppContext, outcome: BackupOutcome): void {
  if (outcome.skipped) logFields(c, { skipped: true, reason: outcome.reason, latest: outcome.latest.id, scheduledAt: outcome.scheduledAt ?? null });
  else logFields(c, { snapshot: outcome.snapshot.id, collections: outcome.snapshot.collections, records: outcome.snapshot.records, bytes: outcome.snapshot.bytes, newBytes: outcome.snapshot.newBytes, forgotten: outcome.retention?.deleted.length ?? null });
}
