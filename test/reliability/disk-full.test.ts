import { readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fsStorage } from "../../lib/storage/fs.js";
import type { Storage } from "../../lib/storage/types.js";
import { readAll } from "../../lib/storage/streams.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, dumpCollection, makeRecords } from "../fixtures/dataset.js";
import { mountTmpfs, type Tmpfs } from "../fixtures/tmpfs.js";
import { client, expectError, makeApp, makeService, type Client } from "../handlers/harness.js";

// Issue 12, part 1: BACKUP_DIR on a real 8 MiB tmpfs, a backup that does not fit, then the
// volume grown. Before the fix the failed backup left a short chunk under its real name,
// the next backup reused it and committed a snapshot that did not verify.

const MiB = 1024 * 1024;
// About 10 MB of chunks, more than the 8 MiB volume holds: few records of many floats are
// far quicker for Chroma to take in than many small ones.
const BIG_RECORDS = 5_000;
const BIG_DIM = 600;

const disk = await mountTmpfs(8 * MiB);
if (typeof disk === "string") console.warn(`[disk-full] skipped: ${disk}`);

async function chunkKeys(storage: Storage): Promise<Map<string, number>> {
  const keys = new Map<string, number>();
  for await (const info of storage.list("chunks/")) keys.set(info.key, info.size ?? -1);
  return keys;
}

/**
 * Each record as one comparable line, sorted by id (l2 collections give embeddings back
 * exactly; Chroma orders metadata keys differently from call to call, so they are sorted).
 */
function recordLines(dump: string): string[] {
  const got = JSON.parse(dump) as { ids: string[]; embeddings: number[][]; documents: unknown[]; metadatas: (Record<string, unknown> | null)[]; uris: unknown[] };
  const sortedKeys = (m: Record<string, unknown> | null) => (m === null ? null : Object.fromEntries(Object.entries(m).sort(([a], [b]) => a.localeCompare(b))));
  return got.ids.map((id, i) => JSON.stringify([id, got.embeddings[i], got.documents[i], sortedKeys(got.metadatas[i]!), got.uris[i]])).sort();
}

describe.skipIf(typeof disk === "string")("a full disk under the fs store (real tmpfs)", () => {
  const volume = disk as Tmpfs;
  let chroma: TestChroma;
  let storage: Storage;
  let api: Client;
  let first: string;

  beforeAll(async () => {
    chroma = await startTestChroma();
    storage = fsStorage(volume.dir);
    api = client(makeApp(makeService({ chromaUrl: chroma.url, storage })));
    const small = await createCollection(chroma.url, "small", '{"hnsw":{"space":"l2"}}');
    await addRecords(chroma.url, small, makeRecords(300, 16, 1, "small"));
    const ok = await api.post("/backups", {});
    expect(ok.status, ok.text).toBe(201);
    first = ok.body.id;
    const big = await createCollection(chroma.url, "big", '{"hnsw":{"space":"l2"}}');
    await addRecords(chroma.url, big, makeRecords(BIG_RECORDS, BIG_DIM, 2, "big"));
  }, 180_000);

  afterAll(async () => {
    await chroma?.close();
    await volume.unmount();
  });

  it("answers 507 storage_full, commits nothing, prune frees the orphans; grown, the next backup verifies and restores whole", async () => {
    const before = await chunkKeys(storage);

    // 1. The backup that does not fit.
    const full = await api.post("/backups", {});
    expectError(full, 507, "storage_full");
    const message: string = full.body.error.message;
    expect(message).toMatch(/no space left/);
    expect(message).toMatch(/wrote \d+ of \d+ bytes, \d+ bytes free/);
    expect(message).toMatch(/POST \/prune/);
    expect(message).toMatch(/grow the volume/);
    expect(full.body.error.details).toMatchObject({ driver: "fs", operation: "put" });
    expect((await api.get("/backups")).body.snapshots.map((s: { id: string }) => s.id)).toEqual([first]);
    expect((await api.get("/status")).body.lock).toBeNull();
    expect(await readdir(join(volume.dir, ".partial"))).toEqual([]);
    // Every chunk in the store is whole: each hashes to its name (the readers check it).
    const afterFailure = await chunkKeys(storage);
    const orphans = [...afterFailure.keys()].filter((k) => !before.has(k));
    expect(orphans.length).toBeGreaterThan(0);
    expect((await api.post(`/backups/${first}/verify`)).body.ok).toBe(true);

    // 2. prune, run under the lock, frees the failed backup's chunks at once (no grace).
    const largest = orphans.reduce((a, b) => (afterFailure.get(a)! >= afterFailure.get(b)! ? a : b));
    const largestBytes = await readAll(await storage.get(largest));
    const pruned = await api.post("/prune", {});
    expect(pruned.status, pruned.text).toBe(200);
    expect(pruned.body).toMatchObject({ deleted: [], chunksDeleted: orphans.length });
    expect(pruned.body.bytesFreed).toBeGreaterThan(0);
    expect([...(await chunkKeys(storage)).keys()].sort()).toEqual([...before.keys()].sort());

    // 3. What the old code left behind: the first half of a chunk under its real name.
    // The next backup must see its size is wrong and write it again.
    await writeFile(join(volume.dir, ...largest.split("/")), largestBytes.subarray(0, Math.floor(largestBytes.byteLength / 2)));

    // 4. The volume grown, the same backup goes through.
    await volume.resize(64 * MiB);
    const grown = await api.post("/backups", {});
    expect(grown.status, grown.text).toBe(201);
    const newest: string = grown.body.id;
    expect((await stat(join(volume.dir, ...largest.split("/")))).size).toBe(largestBytes.byteLength);

    // 5. Every snapshot listed verifies; the newest restores completely.
    const listed = (await api.get("/backups")).body.snapshots.map((s: { id: string }) => s.id);
    expect(listed).toEqual([newest, first]);
    for (const id of listed) {
      const report = await api.post(`/backups/${id}/verify`);
      expect(report.body, id).toMatchObject({ ok: true, errors: [] });
    }
    const restored = await api.post("/restore", { snapshot: newest, rename: { big: "big-restored", small: "small-restored" } });
    expect(restored.status, restored.text).toBe(200);
    expect(restored.body.collections).toEqual(
      expect.arrayContaining([
        { name: "big-restored", records: BIG_RECORDS },
        { name: "small-restored", records: 300 },
      ]),
    );
    for (const name of ["big", "small"]) {
      const original = recordLines(await dumpCollection(chroma.url, await collectionId(chroma.url, name)));
      const copy = recordLines(await dumpCollection(chroma.url, await collectionId(chroma.url, `${name}-restored`)));
      expect(copy.length, name).toBe(original.length);
      const differing = copy.findIndex((line, i) => line !== original[i]);
      expect(differing, `${name}: first differing record: ${copy[differing]?.slice(0, 200)} vs ${original[differing]?.slice(0, 200)}`).toBe(-1);
    }
  }, 240_000);
});
