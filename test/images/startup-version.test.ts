/**
 * restoreFromImage while the Chroma version is still being probed (runtime/startup-restore.ts
 * passes a promise): the download starts on a guess, the newest image at or before the
 * snapshot. Here that guess is an image another Chroma made, so it must be cancelled and
 * leave nothing behind; a real Chroma and real files throughout.
 */
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbeddedChroma } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { restoreFromImage } from "../../lib/images/startup.js";
import { uploadImage } from "../../lib/images/store.js";
import type { ImageManifest } from "../../lib/images/types.js";
import type { Logger } from "../../lib/log.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { addRecords, collectionId, createCollection, dumpCollection, makeRecords } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";

let work: string;
let storage: Storage;
let chromaVersion: string;
let a: Manifest;
let b: Manifest;
let imageB: ImageManifest;
let atB: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "image-version-"));
  storage = memoryStorage();
  const source = join(work, "source");
  let chroma = await startEmbeddedChroma({ dataDir: source });
  chromaVersion = chroma.version;
  try {
    await createCollection(chroma.url, "notes", '{"hnsw":{"space":"l2"}}');
    await addRecords(chroma.url, await collectionId(chroma.url, "notes"), makeRecords(800, 32, 5, "notes"));
    a = await takeSnapshot(new ChromaRest({ url: chroma.url }), storage);
  } finally {
    await chroma.stop();
  }
  await uploadImage(storage, source, { snapshot: a.id, chromaVersion, collections: [{ name: "notes", records: 800, sampleIds: ["notes-0"] }] });
  chroma = await startEmbeddedChroma({ dataDir: source });
  try {
    const notes = await collectionId(chroma.url, "notes");
    await addRecords(chroma.url, notes, makeRecords(850, 32, 5, "notes").slice(800));
    atB = await dumpCollection(chroma.url, notes);
    b = await takeSnapshot(new ChromaRest({ url: chroma.url }), storage);
  } finally {
    await chroma.stop();
  }
  // The newest image, of B, says another Chroma made it: the guess, never this Chroma's.
  imageB = (await uploadImage(storage, source, { snapshot: b.id, chromaVersion: "0.0.0-other", collections: [{ name: "notes", records: 850, sampleIds: ["notes-849"] }] })).manifest;
}, 120_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The store, answering the probe's version once the guessed download has fetched a few of its own chunks. */
function probedWhileDownloading(version: string): { storage: Storage; chromaVersion: Promise<string>; guessedChunksFetched: () => number } {
  const own = new Set(imageB.files.flatMap((f) => f.chunks.map((c) => `chunks/${c.hash.slice(0, 2)}/${c.hash}`)));
  let fetched = 0;
  let answer!: (v: string) => void;
  const chromaVersion = new Promise<string>((resolve) => (answer = resolve));
  const wrapped: Storage = Object.create(storage) as Storage;
  wrapped.get = async (key) => {
    if (own.has(key) && ++fetched === 3) answer(version);
    return storage.get(key);
  };
  return { storage: wrapped, chromaVersion, guessedChunksFetched: () => fetched };
}

const quiet: Logger = () => {};

describe("restoreFromImage with the Chroma version still being probed", () => {
  it("the guessed image of another Chroma is cancelled; this Chroma's older image is placed and caught up", async () => {
    const root = await mkdtemp(join(work, "start-"));
    const probe = probedWhileDownloading(chromaVersion);
    const outcome = await restoreFromImage({
      storage: probe.storage,
      dataDir: join(root, "chroma"),
      markerPath: join(root, "image-restore.json"),
      chromaVersion: probe.chromaVersion,
      startChroma: () => startEmbeddedChroma({ dataDir: join(root, "chroma") }),
      client: (url) => new ChromaRest({ url }),
      log: quiet,
    });
    expect(probe.guessedChunksFetched()).toBeGreaterThanOrEqual(3);
    expect(outcome.used).toBe(true);
    if (!outcome.used) return;
    try {
      expect(outcome).toMatchObject({ image: a.id, snapshot: b.id, records: 850 });
      expect(outcome.catchUp.upserted).toBeGreaterThanOrEqual(50);
      const held = await dumpCollection(outcome.chroma.url, await collectionId(outcome.chroma.url, "notes"));
      expectSameRecords(parseDump(atB), parseDump(held), false);
    } finally {
      await outcome.chroma.stop();
    }
    expect((await readdir(root)).sort()).toEqual(["chroma"]); // no marker, no temp folder of either download
  }, 90_000);

  it("no image of the probed version: nothing left (no data directory, marker or temp folder), the reason says so", async () => {
    const root = await mkdtemp(join(work, "none-"));
    const probe = probedWhileDownloading("9.9.9");
    const outcome = await restoreFromImage({
      storage: probe.storage,
      dataDir: join(root, "chroma"),
      markerPath: join(root, "image-restore.json"),
      chromaVersion: probe.chromaVersion,
      startChroma: () => Promise.reject(new Error("no Chroma is started without an image")),
      client: (url) => new ChromaRest({ url }),
      log: quiet,
    });
    expect(probe.guessedChunksFetched()).toBeGreaterThanOrEqual(3);
    expect(outcome).toEqual({ used: false, reason: expect.stringMatching(/this is Chroma 9\.9\.9/) as unknown });
    expect(await readdir(root)).toEqual([]);
    await expect(stat(join(root, "chroma"))).rejects.toThrow(/ENOENT/);
  }, 60_000);
});
