/** Progress of a backup or restore, one event per step of a collection (the CLI and NDJSON answers show it). */
export interface ProgressEvent {
  collection: string;
  records: number;
  totalRecords: number;
  bytes: number;
}
