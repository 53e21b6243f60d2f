import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { downloadImage, listImages, pruneImages, uploadImage } from "../../lib/images/store.js";
import type { ImageManifest } from "../../lib/images/types.js";
import { prune } from "../../lib/prune.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import { serializeManifest, type Manifest } from "../../lib/snapshot/manifest.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { mulberry32 } from "../fixtures/dataset.js";

const IDS = ["20261201T000000Z-0001", "20261202T000000Z-0002", "20261203T000000Z-0003"];

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "images-prune-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function noise(bytes: number, seed: number): Uint8Array {
  const rand = mulberry32(seed);
  return Uint8Array.from({ length: bytes }, () => Math.floor(rand() * 256));
}

/** A committed snapshot with no collections: prune counts it like any other. */
async function commitSnapshot(storage: Storage, id: string, createdAt: string): Promise<void> {
  const m: Manifest = { format: 2, id, createdAt, durationMs: 1, tag: null, chroma: { url: "http://x", version: null, tenant: "t", database: "d" }, collections: [], records: 0, bytes: 0, newBytes: 0, warnings: [] };
  await storage.put(`snapshots/${id}.json`, await serializeManifest(m));
}

/** Three images sharing one file, each with a file of its own; returns them oldest first. */
async function threeImages(storage: Storage): Promise<ImageManifest[]> {
  const out: ImageManifest[] = [];
  for (const [i, id] of IDS.entries()) {
    await commitSnapshot(storage, id, `2026-12-0${i + 1}T00:00:00.000Z`);
    const dir = join(work, `${storage.driver}-${i}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "shared.bin"), noise(200_000, 1));
    await writeFile(join(dir, "own.bin"), noise(200_000, 100 + i));
    out.push((await uploadImage(storage, dir, { snapshot: id, chromaVersion: "1.0.5", collections: [] })).manifest);
  }
  return out;
}

const chunksOf = (m: ImageManifest) => new Set(m.files.flatMap((f) => f.chunks.map((c) => c.hash)));

async function held(storage: Storage, hashes: Iterable<string>): Promise<boolean[]> {
  return Promise.all([...hashes].map((h) => storage.head(chunkKey(h)).then(() => true, () => false)));
}

describe.each([
  ["memory", () => memoryStorage()],
  ["fs", () => fsStorage(join(work, "store-fs"))],
])("prune with restore images (%s store)", (_name, make) => {
  it("keeps the newest IMAGE_KEEP images and their chunks; the others go with the chunks only they used", async () => {
    const storage = make();
    const [a, b, c] = await threeImages(storage);
    const dry = await prune(storage, { keepLast: 10 }, { dryRun: true, graceSeconds: 0, imageKeep: 1 });
    expect(dry.imagesDeleted.sort()).toEqual([IDS[0], IDS[1]]);
    expect((await listImages(storage)).length).toBe(3);

    const result = await prune(storage, { keepLast: 10 }, { imageKeep: 1 });
    expect(result.deleted).toEqual([]);
    expect(result.imagesDeleted.sort()).toEqual([IDS[0], IDS[1]]);
    expect((await listImages(storage)).map((m) => m.snapshot)).toEqual([IDS[2]]);
    expect(await held(storage, chunksOf(c!))).not.toContain(false);
    const onlyOld = [...chunksOf(a!), ...chunksOf(b!)].filter((h) => !chunksOf(c!).has(h));
    expect(onlyOld.length).toBeGreaterThan(0);
    expect(await held(storage, onlyOld)).not.toContain(true);
    // The kept image still downloads whole.
    await downloadImage(storage, c!, join(work, `${storage.driver}-restored`));
  });

  it("an image whose snapshot is pruned goes, whatever IMAGE_KEEP says", async () => {
    const storage = make();
    for await (const info of storage.list("")) await storage.delete(info.key);
    await threeImages(storage);
    const result = await prune(storage, { keepLast: 1 }, { imageKeep: 5 });
    expect(result.deleted.sort()).toEqual([IDS[0], IDS[1]]);
    expect(result.imagesDeleted.sort()).toEqual([IDS[0], IDS[1]]);
    expect((await listImages(storage)).map((m) => m.snapshot)).toEqual([IDS[2]]);
  });
});

it("pruneImages on its own deletes the manifests only, and a damaged image manifest with them", async () => {
  const storage = memoryStorage();
  await threeImages(storage);
  await storage.put(`images/${IDS[0]}.json`, new TextEncoder().encode("{}"));
  expect(await pruneImages(storage, 1, { dryRun: true })).toEqual({ kept: [IDS[2]], deleted: [IDS[1], IDS[0]] });
  expect(await pruneImages(storage, 1)).toEqual({ kept: [IDS[2]], deleted: [IDS[1], IDS[0]] });
  expect((await listImages(storage)).map((m) => m.snapshot)).toEqual([IDS[2]]);
  expect(await pruneImages(storage, 0)).toEqual({ kept: [], deleted: [IDS[2]] });
});
