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
/** An image's files placed and checked per second when none was measured yet (measured here: 68 MB in about 2 s). */
const DEFAULT_IMAGE_BYTES_PER_SECOND = 10_000_000;
/** The kind of measurement a startup restore from an image records: its file bytes over download + start + check. */
export const IMAGE_KIND = "image";

export interface RestoreMeasurement {
  at: string;
  snapshot: string;
  records: number;
  bytes: number;
  durationMs: number;
  /** "restore" or "drill" (logical restores), or "image" (IMAGE_KIND: bytes are the image's files). */
  kind: string;
}

/** A restore image a startup restore of the snapshot would use. */
export interface ImageForRestore {
  /** The image's snapshot. */
  snapshot: string;
  /** Its files' bytes. */
  bytes: number;
  /** Records the catch-up from the image's snapshot to the one being restored writes. */
  deltaRecords: number;
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

/**
 * How long restoring `snapshot` would take at the measured rates: logically, the slower
 * of records/s and bytes/s of the measured logical restores; with a usable `image`, its
 * bytes at the measured image rate plus its delta records at the logical records/s.
 */
export function estimateRestore(snapshot: { records: number; bytes: number } | null, measured: RestoreMeasurement[], image: ImageForRestore | null = null): RtoEstimate {
  if (!snapshot) return { estimatedRestoreSeconds: null, basis: "no snapshot to restore" };
  const logical = measured.filter((m) => m.kind !== IMAGE_KIND);
  let recordsPerSecond = DEFAULT_RECORDS_PER_SECOND;
  let bytesPerSecond = DEFAULT_BYTES_PER_SECOND;
  let basis = `no restore measured yet: assumed ${DEFAULT_RECORDS_PER_SECOND} records/s and ${rate(DEFAULT_BYTES_PER_SECOND)}`;
  if (logical.length > 0) {
    const seconds = logical.reduce((n, m) => n + m.durationMs, 0) / 1000;
    recordsPerSecond = logical.reduce((n, m) => n + m.records, 0) / seconds;
    bytesPerSecond = Math.max(1, logical.reduce((n, m) => n + m.bytes, 0) / seconds);
    const newest = logical[0]!;
    basis = `measured: ${logical.length} restore(s) of this deployment (newest ${newest.kind} of ${newest.snapshot} at ${newest.at}), ${Math.round(recordsPerSecond)} records/s, ${rate(bytesPerSecond)}`;
  }
  if (image) {
    const images = measured.filter((m) => m.kind === IMAGE_KIND);
    const imageSeconds = images.reduce((n, m) => n + m.durationMs, 0) / 1000;
    const imageRate = images.length > 0 && imageSeconds > 0 ? Math.max(1, images.reduce((n, m) => n + m.bytes, 0) / imageSeconds) : DEFAULT_IMAGE_BYTES_PER_SECOND;
    const seconds = image.bytes / imageRate + image.deltaRecords / recordsPerSecond;
    const imageBasis = images.length > 0 ? `${images.length} image restore(s) measured, ${rate(imageRate)}` : `no image restore measured yet: assumed ${rate(imageRate)}`;
    return {
      estimatedRestoreSeconds: Math.ceil(seconds),
      basis: `from the image of ${image.snapshot} (${size(image.bytes)}; ${imageBasis}) plus ${image.deltaRecords} records to catch up; logical restores ${basis}`,
    };
  }
  const seconds = Math.max(snapshot.records / recordsPerSecond, snapshot.bytes / bytesPerSecond);
  return { estimatedRestoreSeconds: Math.ceil(seconds), basis };
}

function rate(bytesPerSecond: number): string {
  return `${size(bytesPerSecond)}/s`;
}

function size(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.round(bytes / 1e3)} KB`;
}
