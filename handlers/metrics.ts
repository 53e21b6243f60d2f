import { writeExposition, type MetricFamily } from "../lib/metrics.js";
import type { AppContext } from "./context.js";

/** GET /metrics: Prometheus text exposition; the store-wide figures are read fresh from the store on each scrape. */
export const metrics = async (c: AppContext) => {
  const { service, metrics: operations } = c.get("deps");
  const status = await service.status();
  const drills = [...(await service.drills()).values()].sort((a, b) => b.at.localeCompare(a.at));
  const gauge = (name: string, help: string, value: number | null): MetricFamily => ({ name, help, type: "gauge", samples: value === null ? [] : [{ value }] });
  const families: MetricFamily[] = [
    gauge("chroma_backup_last_success_timestamp_seconds", "When the newest snapshot (not a pre-restore safety one) was taken, Unix seconds.", status.lastBackup ? Date.parse(status.lastBackup.createdAt) / 1000 : null),
    gauge("chroma_backup_snapshots", "Snapshots in the store.", status.storage.snapshots),
    gauge("chroma_backup_damaged_snapshots", "Snapshots whose manifest cannot be read or fails its checks.", status.storage.damagedSnapshots.length),
    gauge("chroma_backup_stored_bytes", "Bytes the store holds (after deduplication and compression).", status.storage.storedBytes),
    gauge("chroma_backup_logical_bytes", "Bytes of all snapshots summed, before deduplication.", status.storage.logicalBytes),
    gauge("chroma_backup_restore_estimate_seconds", "Estimated seconds to restore the newest snapshot (see /status rto.basis).", status.rto.estimatedRestoreSeconds),
    gauge("chroma_backup_unprotected_changes", "1 when Chroma may hold changes no snapshot has.", status.rpo.unprotectedChanges ? 1 : 0),
    gauge("chroma_backup_last_drill_success", "1 when the newest restore drill passed, 0 when it failed; absent before the first drill.", drills[0] ? (drills[0].ok ? 1 : 0) : null),
    gauge("chroma_backup_last_drill_timestamp_seconds", "When the newest restore drill ran, Unix seconds.", drills[0] ? Date.parse(drills[0].at) / 1000 : null),
    ...(operations?.families() ?? []),
  ];
  c.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  c.header("Cache-Control", "no-store");
  return c.body(writeExposition(families));
};
