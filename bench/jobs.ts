/** What bench/run.ts asks of bench/worker.ts, and how the answer comes back. */
import type { SnapshotOptions } from "../lib/snapshot/backup.js";
import type { RestoreOptions } from "../lib/snapshot/restore.js";

/** The worker's answer is the stdout line starting with this, followed by JSON. */
export const RESULT_PREFIX = "RESULT ";
/** The stores are laid out as the service lays them out (STORAGE_PREFIX default). */
export const STORAGE_PREFIX = "chromadb/";

/** Enough to rebuild the seeded records in another process (bench/dataset.ts is deterministic). */
export interface DatasetParams {
  prefix: string;
  counts: number[];
  dim: number;
  seed: number;
  corpusOffset: number;
}

export type Job =
  | { mode: "read-tune"; url: string; collection: string; pageSizes: number[]; concurrencies: number[] }
  | { mode: "raw-read"; url: string; collections: string[]; pageSize: number; concurrency: number; byIds: boolean }
  | { mode: "baselines"; url: string; collections: string[]; pageSize: number }
  | { mode: "backup"; url: string; storeDir: string; collections: string[]; options: SnapshotOptions }
  | { mode: "restore"; url: string; storeDir: string; snapshotId: string; rename: Record<string, string>; options: RestoreOptions }
  | { mode: "write-tune"; url: string; dataset: DatasetParams; trialRecords: number; batchSizes: number[]; concurrencies: number[]; namePrefix: string }
  | { mode: "raw-write"; url: string; dataset: DatasetParams; batchSize: number; concurrency: number; namePrefix: string }
  | { mode: "verify"; storeDir: string; snapshotId: string }
  | { mode: "raw-hash"; storeDir: string; snapshotId: string };
