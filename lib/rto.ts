/**
 * Restore time objective: this deployment's measured restore rates, kept in the store
 * (`stats/restores.json`, checksummed JSON), and the estimate they give for a snapshot.
 */
import type { Logger } from "./log.js";
import { readJsonRecord, writeJsonRecord } from "./stored-json.js";
import type { Storage } from "./storage/types.js";

const RESTORE_STATS_KEY = "stats/restores.json";
/** Restores the rates are averaged over (the newest). */
const KEEP = 20;
/** Assumed when nothing was measured yet: deliberately slow, so the estimate errs long. */
const DEFAULT_RECORDS_PER_SECOND = 200;
const DEFAULT_BYTES_PER_SECOND = 1_000_000;

export interface RestoreMeasurement {
  at: string;
  snapshot: string;
  records: number;
  bytes: number;
  durationMs: number;
  /** "restore" or "drill". */
  kind: string;
}

export interface RtoEstimate {
  estimatedRestoreSeconds: number | null;
  basis: string;
}

export async function readRestoreStats(storage: Storage, log?: Logger): Promise<RestoreMeasurement[]> {
  const record = await readJsonRecord<{ restores: RestoreMeasurement[] }>(storage, RESTORE_STATS_KEY, log);
  return record?.restores ?? [];
}

/** Adds a measured restore to the stats (best effort: a failed write is logged, not raised). */
export async function recordRestore(storage: Storage, m: RestoreMeasurement, log?: Logger): Promise<void> {
  if (m.durationMs <= 0 || m.records <= 0) return;
  try {
    const restores = [m, ...(await readRestoreStats(storage, log))].slice(0, KEEP);
    await writeJsonRecord(storage, RESTORE_STATS_KEY, { restores });
  } catch (err) {
    log?.("warn", "could not record the restore's rate for the RTO estimate", { error: (err as Error).message });
  }
}

/** How long restoring `snapshot` would take at the measured rates (the slower of records/s and bytes/s). */
export function estimateRestore(snapshot: { records: number; bytes: number } | null, measured: RestoreMeasurement[]): RtoEstimate {
  if (!snapshot) return { estimatedRestoreSeconds: null, basis: "no snapshot to restore" };
  let recordsPerSecond = DEFAULT_RECORDS_PER_SECOND;
  let bytesPerSecond = DEFAULT_BYTES_PER_SECOND;
  let basis = `no restore measured yet: assumed ${DEFAULT_RECORDS_PER_SECOND} records/s and ${rate(DEFAULT_BYTES_PER_SECOND)}`;
  if (measured.length > 0) {
    const seconds = measured.reduce((n, m) => n + m.durationMs, 0) / 1000;
    recordsPerSecond = measured.reduce((n, m) => n + m.records, 0) / seconds;
    bytesPerSecond = Math.max(1, measured.reduce((n, m) => n + m.bytes, 0) / seconds);
    const newest = measured[0]!;
    basis = `measured: ${measured.length} restore(s) of this deployment (newest ${newest.kind} of ${newest.snapshot} at ${newest.at}), ${Math.round(recordsPerSecond)} records/s, ${rate(bytesPerSecond)}`;
  }
  const seconds = Math.max(snapshot.records / recordsPerSecond, snapshot.bytes / bytesPerSecond);
  return { estimatedRestoreSeconds: Math.ceil(seconds), basis };
}

function rate(bytesPerSecond: number): string {
  return bytesPerSecond >= 1e6 ? `${(bytesPerSecond / 1e6).toFixed(1)} MB/s` : `${Math.round(bytesPerSecond / 1e3)} KB/s`;
}
