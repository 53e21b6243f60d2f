import { afterAll, beforeAll, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";
import { readChunk } from "../../lib/snapshot/read-chunk.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, createCollection, deleteRecords, makeRecords } from "../fixtures/dataset.js";

// A backup lists a collection's ids ahead (idListSize at a time) and reads records by id
// (pageSize at a time). Small sizes here put many list and page boundaries in 60 records.
const PAGING = { pageSize: 7, idListSize: 10 };
const CONFIG = '{"hnsw":{"space":"l2"}}';

let chroma: TestChroma;
let rest: ChromaRest;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
}, 120_000);

afterAll(async () => {
  await chroma?.close();
});

/** The ids in Chroma's own order (one get of them all). */
async function serverOrder(name: string): Promise<string[]> {
  const info = (await rest.getCollection(name))!;
  return rest.listIds(info.id, 0, 100_000);
}

/** Every live record id of `name` in the snapshot, in chunk order. */
async function snapshotIds(storage: Storage, manifest: Manifest, name: string): Promise<string[]> {
  const entry = manifest.collections.find((c) => c.name === name)!;
  const ids: string[] = [];
  for (const ref of entry.chunks) {
    const batch = await readChunk(storage, ref, name, entry.dimension);
    const drop = new Set(ref.drop ?? []);
    batch.ids.forEach((id, i) => drop.has(i) || ids.push(id));
  }
  return ids;
}

it("reads every record once, in the server's order, across many list and page boundaries", async () => {
  const id = await createCollection(chroma.url, "paged", CONFIG);
  await addRecords(chroma.url, id, makeRecords(60, 8, 1, "paged"));
  const storage = memoryStorage();
  const manifest = await takeSnapshot(rest, storage, { ...PAGING, collections: ["paged"] });
  expect(manifest.warnings).toEqual([]);
  expect(await snapshotIds(storage, manifest, "paged")).toEqual(await serverOrder("paged"));
});

it("records deleted during the backup are left out, and every other record is in it once: an emptied page does not end the read, records a delete shifted past the listing are caught up", async () => {
  const id = await createCollection(chroma.url, "shrinking", CONFIG);
  await addRecords(chroma.url, id, makeRecords(60, 8, 2, "shrinking"));
  const order = await serverOrder("shrinking");
  // The whole second page of records, and two of the fourth.
  const doomed = [...order.slice(7, 14), ...order.slice(21, 23)];
  let deleted = false;
  // Deletes once the first ids are listed and before any record is read.
  const deletingFetch: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    if (!deleted && typeof init?.body === "string" && init.body.includes('"include":[]')) {
      deleted = true;
      await deleteRecords(chroma.url, id, doomed);
    }
    return response;
  };
  const storage = memoryStorage();
  const manifest = await takeSnapshot(new ChromaRest({ url: chroma.url, fetch: deletingFetch }), storage, { ...PAGING, collections: ["shrinking"] });
  expect(deleted).toBe(true);
  const ids = await snapshotIds(storage, manifest, "shrinking");
  // The delete shifted three records (after the first ten listed) back past the second
  // listing's offset: those are read in the catch-up pass, after the others.
  expect(ids.slice(0, 48)).toEqual(order.filter((x) => !doomed.includes(x)).filter((x) => !order.slice(14, 17).includes(x)));
  expect(ids.slice(48)).toEqual(order.slice(14, 17));
  expect(manifest.warnings).toEqual([`collection shrinking changed during the backup: 60 records at the start, 51 at the end, 51 read`]);
});

it("an empty collection and one of exactly a list's length back up whole", async () => {
  await createCollection(chroma.url, "empty", CONFIG);
  const id = await createCollection(chroma.url, "ten", CONFIG);
  await addRecords(chroma.url, id, makeRecords(PAGING.idListSize, 8, 3, "ten"));
  const storage = memoryStorage();
  const manifest = await takeSnapshot(rest, storage, { ...PAGING, collections: ["empty", "ten"] });
  expect(manifest.collections.map((c) => [c.name, c.records])).toEqual([
    ["empty", 0],
    ["ten", 10],
  ]);
  expect(await snapshotIds(storage, manifest, "ten")).toEqual(await serverOrder("ten"));
});
