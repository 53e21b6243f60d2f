/**
 * buildImage against real parts: a real Chroma holding the data, the fs store, and a real
 * scratch Chroma (startEmbeddedChroma) the image is made in. The image is then started in
 * a third Chroma and must hold exactly the snapshot.
 */
import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { loadableChromaVersion } from "../../lib/chroma/launcher.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { readDrill } from "../../lib/drill.js";
import { buildImage } from "../../lib/images/build.js";
import { downloadImage, listImages, readImage } from "../../lib/images/store.js";
import { silentLogger } from "../../lib/log.js";
import { isChromaOn } from "../../lib/chroma/data-dir-lock.js";
import { findProcesses } from "../../lib/chroma/processes.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";
import type { BackupService } from "../../lib/service.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, deleteRecords, makeRecords } from "../fixtures/dataset.js";
import { makeService, makeStore, resetChroma, type Store } from "../handlers/harness.js";

const ALPHA = { name: "alpha", count: 400, dim: 8, seed: 41 };
const BETA = { name: "beta", count: 150, dim: 4, seed: 42 };

let source: TestChroma;
let store: Store;
let service: BackupService;
let work: string;
const started: EmbeddedChroma[] = [];
const startChroma = async (dataDir: string) => {
  const chroma = await startEmbeddedChroma({ dataDir });
  started.push(chroma);
  return chroma;
};

beforeAll(async () => {
  source = await startTestChroma();
  await resetChroma(source.url, [ALPHA, BETA]);
  store = await makeStore("fs");
  service = makeService({ chromaUrl: source.url, storage: store.storage });
  work = await mkdtemp(join(tmpdir(), "image-build-"));
});

afterAll(async () => {
  for (const c of started) await c.stop();
  await rm(work, { recursive: true, force: true });
  await store?.cleanup();
  await source?.close();
});

async function snapshotNow(): Promise<Manifest> {
  const outcome = await service.backup({ force: true });
  if (outcome.skipped) throw new Error("the backup was skipped");
  return outcome.manifest;
}

const exists = (path: string) => access(path).then(() => true, () => false);

/** Starts a Chroma on a download of the image and reads each collection's count. */
async function countsInImage(snapshotId: string): Promise<Record<string, number>> {
  const dir = join(work, `started-${snapshotId}-${Math.random().toString(16).slice(2)}`);
  await downloadImage(store.storage, await readImage(store.storage, snapshotId), dir);
  const chroma = await startChroma(dir);
  try {
    const rest = new ChromaRest({ url: chroma.url });
    const counts: Record<string, number> = {};
    for (const c of await rest.listCollections()) counts[c.name] = await rest.count(c.id);
    return counts;
  } finally {
    await chroma.stop();
  }
}

describe("buildImage", () => {
  it("with no image yet: restores the snapshot logically into a scratch Chroma, checks it, records the drill and uploads the image", async () => {
    const snapshot = await snapshotNow();
    const scratchDir = join(work, "scratch");
    const built = await buildImage(store.storage, snapshot, { scratchDir, chromaVersion: await loadableChromaVersion(), startChroma, log: silentLogger });

    expect(built.image).toMatchObject({ snapshot: snapshot.id, chromaVersion: await loadableChromaVersion() });
    expect(built.image.bytes).toBeGreaterThan(0);
    expect(built.uploadedBytes).toBeGreaterThan(0);
    expect(built.drill).toMatchObject({ snapshot: snapshot.id, via: "image", ok: true, records: ALPHA.count + BETA.count });
    expect(built.drill.checks.find((c) => c.name === "restore")?.message).toMatch(/restored into a scratch Chroma/);
    expect(built.drill.checks.filter((c) => c.name === "nearest" && c.ok).map((c) => c.collection).sort()).toEqual(["alpha", "beta"]);
    expect(await readDrill(store.storage, snapshot.id)).toEqual(built.drill);

    const manifest = await readImage(store.storage, snapshot.id);
    expect(manifest.collections.map((c) => [c.name, c.records]).sort()).toEqual([["alpha", ALPHA.count], ["beta", BETA.count]]);
    for (const c of manifest.collections) expect(c.sampleIds.length).toBeGreaterThan(0);
    expect(manifest.files.some((f) => f.path.endsWith(".pid"))).toBe(false);
    expect(await exists(scratchDir), "the scratch directory is removed").toBe(false);
    expect(started.every((c) => !c.up), "the scratch Chroma is stopped").toBe(true);

    expect(await countsInImage(snapshot.id)).toEqual({ alpha: ALPHA.count, beta: BETA.count });
  });

  it("with an image of the same Chroma: starts from it and catches up to the newer snapshot, uploading less than the image", async () => {
    const alpha = await collectionId(source.url, "alpha");
    await addRecords(source.url, alpha, makeRecords(6, ALPHA.dim, 99, "new"));
    await deleteRecords(source.url, await collectionId(source.url, "beta"), ["beta-1", "beta-2", "beta-3"]);
    const snapshot = await snapshotNow();
    const built = await buildImage(store.storage, snapshot, { scratchDir: join(work, "scratch"), chromaVersion: await loadableChromaVersion(), startChroma, log: silentLogger });

    expect(built.drill.ok, JSON.stringify(built.drill.checks)).toBe(true);
    expect(built.drill.checks.find((c) => c.name === "restore")?.message).toMatch(/caught up/);
    const stored = (await readImage(store.storage, snapshot.id)).storedBytes;
    // At this size SQLite and HNSW rewrite much of their small files; at 20,000 records far less goes up (README, "Restore images").
    expect(built.uploadedBytes, "the chunks the catch-up left alone are not uploaded again").toBeLessThan(stored);
    expect(await countsInImage(snapshot.id)).toEqual({ alpha: ALPHA.count + 6, beta: BETA.count - 3 });
  });

  it("stopped half way: rejects, commits no image, leaves no scratch directory and no Chroma running", async () => {
    const snapshot = await snapshotNow();
    const before = (await listImages(store.storage)).map((m) => m.snapshot);
    const controller = new AbortController();
    let scratch: EmbeddedChroma | null = null;
    const scratchDir = join(work, "scratch-aborted");
    const build = buildImage(store.storage, snapshot, {
      scratchDir,
      chromaVersion: await loadableChromaVersion(),
      startChroma: async (dir) => {
        scratch = await startChroma(dir);
        controller.abort(new Error("stopped by the test"));
        return scratch;
      },
      signal: controller.signal,
      log: silentLogger,
    });
    await expect(build).rejects.toThrow(/stopped by the test/);
    expect((await listImages(store.storage)).map((m) => m.snapshot)).toEqual(before);
    expect(await exists(scratchDir)).toBe(false);
    expect(scratch).not.toBeNull();
    expect(scratch!.up).toBe(false);
    expect(await findProcesses((argv) => isChromaOn(argv, scratchDir))).toEqual([]);
  });
});
