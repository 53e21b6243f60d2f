import { SnapshotCorruptError } from "../errors.js";
import type { Storage } from "../storage/types.js";
import type { Manifest } from "./manifest.js";
import { readChunk } from "./read-chunk.js";

export interface VerifyReport {
  ok: boolean;
  chunks: number;
  records: number;
  bytes: number;
  errors: { chunk: string; collection: string; message: string }[];
}

/** Reads every chunk of a snapshot, checks its checksum and decodes every record; touches no Chroma. */
export async function verifySnapshot(storage: Storage, manifest: Manifest, onChunk?: (done: number, total: number) => void): Promise<VerifyReport> {
  const report: VerifyReport = { ok: true, chunks: 0, records: 0, bytes: 0, errors: [] };
  const total = manifest.collections.reduce((n, c) => n + c.chunks.length, 0);
  for (const collection of manifest.collections) {
    for (const ref of collection.chunks) {
      try {
        const batch = await readChunk(storage, ref, collection.name, collection.dimension);
        report.records += batch.ids.length - (ref.drop?.length ?? 0);
        report.bytes += ref.bytes;
      } catch (err) {
        if (!(err instanceof SnapshotCorruptError)) throw err;
        report.errors.push({ chunk: ref.hash, collection: collection.name, message: err.message });
      }
      report.chunks++;
      onChunk?.(report.chunks, total);
    }
  }
  report.ok = report.errors.length === 0;
  return report;
}
