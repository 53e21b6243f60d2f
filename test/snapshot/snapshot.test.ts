import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { SnapshotCorruptError } from "../../lib/errors.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { readCatalog, readManifest } from "../../lib/snapshot/catalog.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import { manifestKey, type Manifest } from "../../lib/snapshot/manifest.js";
import { restoreSnapshot } from "../../lib/snapshot/restore.js";
import { verifySnapshot } from "../../lib/snapshot/verify.js";
import { fsStorage } from "../../lib/storage/fs.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, deleteRecords, describeCollection, dumpCollection, listCollectionNames, makeRecords, mulberry32 } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "./compare.js";

const COLLECTIONS = [
  { name: "docs-l2", space: "l2", count: 4000, dim: 48, config: '{"hnsw":{"space":"l2","ef_construction":200,"max_neighbors":32,"ef_search":400}}', metadata: '{"owner":"team-a","version":2,"ratio":1.0}' },
  { name: "docs-cosine", space: "cosine", count: 3500, dim: 48, config: '{"hnsw":{"space":"cosine","ef_construction":200,"max_neighbors":32,"ef_search":300}}', metadata: "null" },
  { name: "docs-ip", space: "ip", count: 2600, dim: 48, config: '{"hnsw":{"space":"ip","ef_search":400,"max_neighbors":32}}', metadata: '{"flag":true}' },
];

let chroma: TestChroma;
let rest: ChromaRest;
let root: string;
let storage: Storage;
let first: Manifest;
const before = new Map<string, { dump: string; config: unknown; metadata: unknown; neighbours: string[][] }>();
const queries = (dim: number) => {
  const rand = mulberry32(99);
  return Array.from({ length: 50 }, () => Array.from({ length: dim }, () => rand() * 2 - 1));
};

async function neighbours(name: string, dim: number): Promise<string[][]> {
  const collection = await chroma.client.getCollection({ name, embeddingFunction: undefined as never });
  const result = await collection.query({ queryEmbeddings: queries(dim), nResults: 10, include: [] as never });
  return result.ids as string[][];
}

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
  root = await mkdtemp(join(tmpdir(), "snapshot-store-"));
  storage = fsStorage(root);
  let seed = 1;
  for (const c of COLLECTIONS) {
    const id = await createCollection(chroma.url, c.name, c.config, c.metadata);
    await addRecords(chroma.url, id, makeRecords(c.count, c.dim, seed++, c.name));
    const described = (await describeCollection(chroma.url, c.name))!;
    before.set(c.name, { dump: await dumpCollection(chroma.url, id), config: described.configuration_json, metadata: described.metadata, neighbours: await neighbours(c.name, c.dim) });
  }
  first = await takeSnapshot(rest, storage);
}, 300_000);

afterAll(async () => {
  await chroma?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe("a snapshot of a live Chroma", () => {
  it("records every collection, record count, configuration and its own checksum", async () => {
    expect(first.collections.map((c) => c.name)).toEqual(COLLECTIONS.map((c) => c.name).sort());
    expect(first.records).toBe(10_100);
    const reread = await readManifest(storage, first.id);
    expect(reread).toEqual(first);
    expect(first.chroma.version).toBe("1.0.0");
    for (const c of first.collections) expect(c.chunks.length).toBeGreaterThan(0);
    const report = await verifySnapshot(storage, first);
    expect(report).toMatchObject({ ok: true, records: 10_100, errors: [] });
  });

  it("restores every field exactly: embeddings bit-exact (cosine within 4e-7), metadata types, nulls, configuration, neighbours", async () => {
    for (const c of COLLECTIONS) await rest.deleteCollection(c.name);
    expect(await listCollectionNames(chroma.url)).toEqual([]);
    const restored = await restoreSnapshot(rest, storage, first);
    expect(restored.map((r) => r.records)).toEqual(first.collections.map((c) => c.records));
    for (const c of COLLECTIONS) {
      const was = before.get(c.name)!;
      const described = (await describeCollection(chroma.url, c.name))!;
      expect(described.configuration_json).toEqual(was.config);
      expect(described.metadata).toEqual(was.metadata);
      expectSameRecords(parseDump(was.dump), parseDump(await dumpCollection(chroma.url, described.id)), c.space === "cosine");
      const now = await neighbours(c.name, c.dim);
      const differing = now.flatMap((ids, q) => (JSON.stringify(ids) === JSON.stringify(was.neighbours[q]) ? [] : [{ q, before: was.neighbours[q], after: ids }]));
      expect(differing, `${c.name}: queries whose top-10 changed`).toEqual([]);
    }
    // No collection built aside is left behind.
    expect(await listCollectionNames(chroma.url)).toEqual(COLLECTIONS.map((c) => c.name).sort());
  }, 300_000);

  it("stores only what changed: 1% of records changed adds at most 5% of the first snapshot's bytes", async () => {
    // The baseline is taken after the restore above: Chroma moves restored cosine vectors
    // by an ulp, so those records are (truly) new relative to \`first\`.
    const baseline = await takeSnapshot(rest, storage);
    const rand = mulberry32(7);
    for (const [n, c] of COLLECTIONS.entries()) {
      const id = await collectionId(chroma.url, c.name);
      const changes = Math.round(c.count / 100 / 3);
      const pick = () => `${c.name}-${Math.floor(rand() * c.count)}`;
      const updated = makeRecords(changes, c.dim, 1000 + n, c.name).map((r) => ({ ...r, id: pick() }));
      await addRecords(chroma.url, id, updated, "upsert");
      await addRecords(chroma.url, id, makeRecords(changes, c.dim, 2000 + n, `${c.name}-new`));
      await deleteRecords(chroma.url, id, Array.from({ length: changes }, pick));
    }
    const second = await takeSnapshot(rest, storage);
    let held = 0;
    for (const c of COLLECTIONS) held += await rest.count(await collectionId(chroma.url, c.name));
    expect(second.records).toBe(held);
    expect(second.newBytes / baseline.bytes).toBeLessThanOrEqual(0.05);
    const unchanged = await takeSnapshot(rest, storage);
    console.log(`1% of records changed: ${second.newBytes} new bytes of ${baseline.bytes} (${((100 * second.newBytes) / baseline.bytes).toFixed(2)}%); nothing changed: ${unchanged.newBytes} new bytes`);
    expect(unchanged.newBytes).toBeLessThan(64 * 1024);
    // Nothing new but the manifest, whose stated newBytes is exactly its own stored size.
    expect(unchanged.newBytes).toBe((await storage.head(manifestKey(unchanged.id))).size);
    // And the incremental snapshot restores to exactly what Chroma holds now.
    const now = await dumpCollection(chroma.url, await collectionId(chroma.url, "docs-l2"));
    await restoreSnapshot(rest, storage, second, { collections: ["docs-l2"], rename: { "docs-l2": "docs-l2-check" } });
    expectSameRecords(parseDump(now), parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "docs-l2-check"))), false);
    await rest.deleteCollection("docs-l2-check");
  }, 300_000);

  it("restores with rename next to the original, leaving the original untouched", async () => {
    const id = await collectionId(chroma.url, "docs-ip");
    const original = parseDump(await dumpCollection(chroma.url, id));
    await restoreSnapshot(rest, storage, first, { collections: ["docs-ip"], rename: { "docs-ip": "docs-ip-copy" } });
    expectSameRecords(original, parseDump(await dumpCollection(chroma.url, id)), false);
    const copy = (await describeCollection(chroma.url, "docs-ip-copy"))!;
    expectSameRecords(parseDump(before.get("docs-ip")!.dump), parseDump(await dumpCollection(chroma.url, copy.id)), false);
    await rest.deleteCollection("docs-ip-copy");
  }, 120_000);

  it("sweeps what a killed restore left aside, and never backs it up", async () => {
    await createCollection(chroma.url, "docs-ip.restore-deadbeef1", '{"hnsw":{"space":"ip"}}');
    const snap = await takeSnapshot(rest, storage, { collections: undefined });
    expect(snap.collections.map((c) => c.name)).not.toContain("docs-ip.restore-deadbeef1");
    await restoreSnapshot(rest, storage, first, { collections: ["docs-ip"] });
    expect(await listCollectionNames(chroma.url)).not.toContain("docs-ip.restore-deadbeef1");
  }, 120_000);

  it("catches a flipped byte in a stored chunk in verify and in restore, naming the chunk, writing nothing", async () => {
    const victim = first.collections.find((c) => c.name === "docs-cosine")!.chunks.at(-1)!;
    const path = join(root, ...chunkKey(victim.hash).split("/"));
    const good = await readFile(path);
    const bad = Buffer.from(good);
    bad[Math.floor(bad.length / 2)]! ^= 0x01;
    await writeFile(path, bad);
    try {
      const report = await verifySnapshot(storage, first);
      expect(report.ok).toBe(false);
      expect(report.errors).toEqual([{ chunk: victim.hash, collection: "docs-cosine", message: expect.stringContaining("checksum") }]);

      const id = await collectionId(chroma.url, "docs-cosine");
      const current = parseDump(await dumpCollection(chroma.url, id));
      const err = await restoreSnapshot(rest, storage, first, { collections: ["docs-cosine"] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotCorruptError);
      expect((err as SnapshotCorruptError).chunk).toBe(victim.hash);
      expect((err as SnapshotCorruptError).collection).toBe("docs-cosine");
      expectSameRecords(current, parseDump(await dumpCollection(chroma.url, id)), false);
      const merged = await restoreSnapshot(rest, storage, first, { collections: ["docs-cosine"], mode: "merge" }).catch((e: unknown) => e);
      expect(merged).toBeInstanceOf(SnapshotCorruptError);
      expectSameRecords(current, parseDump(await dumpCollection(chroma.url, id)), false);
      expect(await listCollectionNames(chroma.url)).not.toContainEqual(expect.stringContaining(".restore-"));
    } finally {
      await writeFile(path, good);
    }
  }, 120_000);

  it("a backup that dies half way (a chunk upload fails) leaves no manifest; the previous snapshot still restores", async () => {
    const id = await collectionId(chroma.url, "docs-ip");
    await addRecords(chroma.url, id, makeRecords(3000, 48, 555, "extra"));
    let puts = 0;
    const failing: Storage = {
      ...storage,
      async put(key, body) {
        if (key.startsWith("chunks/") && ++puts === 1) {
          throw new Error("injected: connection reset mid-upload");
        }
        return storage.put(key, body);
      },
    };
    const before = (await readCatalog(storage)).snapshots.map((m) => m.id);
    await expect(takeSnapshot(rest, failing)).rejects.toThrow(/injected/);
    const after = (await readCatalog(storage)).snapshots.map((m) => m.id);
    expect(after).toEqual(before);
    const latest = (await readCatalog(storage)).snapshots[0]!;
    await restoreSnapshot(rest, storage, latest, { collections: ["docs-ip"], rename: { "docs-ip": "docs-ip-prev" } });
    const restored = (await describeCollection(chroma.url, "docs-ip-prev"))!;
    expect(await rest.count(restored.id)).toBe(latest.collections.find((c) => c.name === "docs-ip")!.records);
  }, 120_000);
});
