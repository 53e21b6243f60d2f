import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { SnapshotCorruptError } from "../../lib/errors.js";
import { catchUp, catchUpRecords } from "../../lib/images/catch-up.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";
import { restoreSnapshot } from "../../lib/snapshot/restore.js";
import { fsStorage } from "../../lib/storage/fs.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, deleteRecords, dumpCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";

const L2 = '{"hnsw":{"space":"l2","ef_construction":100,"max_neighbors":16}}';
const COSINE = '{"hnsw":{"space":"cosine","ef_construction":100,"max_neighbors":16}}';

let chroma: TestChroma;
let rest: ChromaRest;
let root: string;
let storage: Storage;
let a: Manifest;
let b: Manifest;
/** Every collection of snapshot B as Chroma held it when B was taken. */
const atB = new Map<string, string>();
const cosineAt = new Set(["kept-cosine"]);

async function dumpAll(into: Map<string, string>): Promise<void> {
  into.clear();
  for (const name of await listCollectionNames(chroma.url)) into.set(name, await dumpCollection(chroma.url, await collectionId(chroma.url, name)));
}

async function emptyChroma(): Promise<void> {
  for (const name of await listCollectionNames(chroma.url)) await rest.deleteCollection(name);
}

async function expectChromaHoldsB(): Promise<void> {
  expect(await listCollectionNames(chroma.url)).toEqual([...atB.keys()].sort());
  for (const [name, dump] of atB) {
    expectSameRecords(parseDump(dump), parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, name))), cosineAt.has(name));
  }
}

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
  root = await mkdtemp(join(tmpdir(), "catch-up-store-"));
  storage = fsStorage(root);
  const kept = await createCollection(chroma.url, "kept-l2", L2, '{"owner":"a"}');
  await addRecords(chroma.url, kept, makeRecords(3000, 16, 1, "k"));
  const cosine = await createCollection(chroma.url, "kept-cosine", COSINE);
  await addRecords(chroma.url, cosine, makeRecords(1500, 16, 2, "c"));
  const dropped = await createCollection(chroma.url, "dropped", L2);
  await addRecords(chroma.url, dropped, makeRecords(200, 16, 3, "d"));
  const retuned = await createCollection(chroma.url, "retuned", L2, '{"v":1}');
  await addRecords(chroma.url, retuned, makeRecords(300, 16, 4, "r"));
  a = await takeSnapshot(rest, storage);

  // Between A and B: records added, updated (same id, new content) and deleted; a
  // collection dropped, one created, one whose metadata changed.
  await addRecords(chroma.url, kept, makeRecords(3100, 16, 1, "k").slice(3000));
  const updated = makeRecords(3000, 16, 77, "k").filter((_, i) => i % 97 === 5);
  await addRecords(chroma.url, kept, updated, "upsert");
  // Replaced: deleted and added back with other content, where a metadata key or the
  // document is gone (an upsert over the old record would keep them: Chroma merges).
  const replaced = makeRecords(40, 16, 99, "k").map((r, i) => ({ ...r, id: `k-${i + 1}` }));
  await deleteRecords(chroma.url, kept, replaced.map((r) => r.id));
  await addRecords(chroma.url, kept, replaced);
  await deleteRecords(chroma.url, kept, Array.from({ length: 30 }, (_, i) => `k-${i * 91 + 3}`));
  await deleteRecords(chroma.url, cosine, ["c-0", "c-1", "c-700"]);
  await addRecords(chroma.url, cosine, makeRecords(1500, 16, 55, "c").filter((_, i) => i % 250 === 9), "upsert");
  await rest.deleteCollection("dropped");
  const created = await createCollection(chroma.url, "created", L2);
  await addRecords(chroma.url, created, makeRecords(150, 16, 6, "n"));
  await rest.deleteCollection("retuned");
  const retunedAgain = await createCollection(chroma.url, "retuned", L2, '{"v":2}');
  await addRecords(chroma.url, retunedAgain, makeRecords(300, 16, 4, "r"));
  b = await takeSnapshot(rest, storage);
  await dumpAll(atB);
}, 300_000);

afterAll(async () => {
  await chroma?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe("catchUp", () => {
  it("brings a Chroma holding snapshot A exactly to snapshot B, writing only the records that differ", async () => {
    await emptyChroma();
    await restoreSnapshot(rest, storage, a);
    const result = await catchUp(rest, storage, a, b, { log: () => {} });
    expect(result.collectionsRestored.sort()).toEqual(["created", "retuned"]);
    // 100 added, 31 updated, plus the cosine upserts; records re-written because their
    // chunk changed are few next to the 4,500 kept: far from a full restore.
    expect(result.upserted).toBeGreaterThanOrEqual(100 + 31 + 6);
    expect(result.upserted).toBeLessThan(1500);
    expect(result.deleted).toBe(30 + 3 + 200);
    // What the RTO estimate counts from the manifests alone: the upserts and the collections restored.
    const restoredRecords = b.collections.filter((c) => result.collectionsRestored.includes(c.name)).reduce((n, c) => n + c.records, 0);
    expect(catchUpRecords(a, b)).toBe(result.upserted + restoredRecords);
    expect(catchUpRecords(b, b)).toBe(0);
    await expectChromaHoldsB();
  });

  it("is a no-op from a snapshot to itself", async () => {
    const result = await catchUp(rest, storage, b, b, { log: () => {} });
    expect(result).toEqual({ upserted: 0, deleted: 0, collectionsRestored: [] });
    await expectChromaHoldsB();
  });

  it("fails with SnapshotCorruptError on a damaged chunk it needs, and on a Chroma that does not hold `from`", async () => {
    await emptyChroma();
    await restoreSnapshot(rest, storage, a);
    const kept = b.collections.find((c) => c.name === "kept-l2")!;
    const newChunk = kept.chunks.find((r) => !a.collections.some((c) => c.chunks.some((x) => x.hash === r.hash)))!;
    const path = join(root, chunkKey(newChunk.hash));
    const original = await readFile(path);
    const damaged = Buffer.from(original);
    damaged[damaged.length >> 1]! ^= 0xff;
    await writeFile(path, damaged);
    try {
      await expect(catchUp(rest, storage, a, b, { log: () => {} })).rejects.toBeInstanceOf(SnapshotCorruptError);
    } finally {
      await writeFile(path, original);
    }
    // A Chroma that holds more than A (a record no snapshot has): the count check refuses the result.
    await emptyChroma();
    await restoreSnapshot(rest, storage, a);
    await addRecords(chroma.url, await collectionId(chroma.url, "kept-l2"), makeRecords(1, 16, 9, "extra"));
    await expect(catchUp(rest, storage, a, b, { log: () => {} })).rejects.toThrow(/kept-l2 holds 3071 records, snapshot .* has 3070/);
  });
});
