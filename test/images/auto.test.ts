/**
 * Automatic restore images after backups (IMAGE_INTERVAL, growth) and IMAGE_KEEP, through
 * the service as the Node runtime wires it (runtime/images.ts), with a real Chroma, the fs
 * store and real scratch Chromas.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { loadConfig } from "../../lib/config.js";
import { imageDue } from "../../lib/images/auto-image.js";
import { listImages } from "../../lib/images/store.js";
import type { ImageManifest } from "../../lib/images/types.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { embeddedImageMaking } from "../../runtime/images.js";
import { loadableChromaVersion } from "../../lib/chroma/launcher.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, makeRecords } from "../fixtures/dataset.js";
import { makeStore, resetChroma, type Store } from "../handlers/harness.js";

/** The bindings the scratch Chroma will run (probed once). */
const chromaVersion = await loadableChromaVersion();

const image = (snapshot: string, createdAt: string, records: number, chromaVersion = "1.0.5"): ImageManifest => ({
  formatVersion: 1,
  snapshot,
  chromaVersion,
  createdAt,
  bytes: 1,
  storedBytes: 1,
  files: [],
  collections: [{ name: "alpha", records, sampleIds: [] }],
});

describe("imageDue", () => {
  const now = new Date("2026-12-07T12:00:00Z");
  const want = { chromaVersion: "1.0.5", intervalSeconds: 86_400, now };
  const snapshot = { id: "20261207T120000Z-aaaa", records: 1000 };

  it("is due with no image, or only images of another Chroma version", () => {
    expect(imageDue([], snapshot, want)).toMatch(/no restore image of Chroma 1\.0\.5/);
    expect(imageDue([image("20261207T110000Z-bbbb", "2026-12-07T11:00:00Z", 1000, "1.3.4")], snapshot, want)).toMatch(/no restore image/);
  });

  it("is due when the newest is older than IMAGE_INTERVAL, or the records grew by more than half", () => {
    expect(imageDue([image("20261206T110000Z-bbbb", "2026-12-06T11:00:00Z", 1000)], snapshot, want)).toMatch(/IMAGE_INTERVAL is 86400s/);
    expect(imageDue([image("20261207T110000Z-bbbb", "2026-12-07T11:00:00Z", 600)], snapshot, want)).toMatch(/grew from 600 .* to 1000/);
  });

  it("is not due when the newest is fresh and the records grew by half or less, or it is of this snapshot", () => {
    expect(imageDue([image("20261207T110000Z-bbbb", "2026-12-07T11:00:00Z", 667)], snapshot, want)).toBeNull();
    expect(imageDue([image("20261207T110000Z-bbbb", "2026-12-07T11:00:00Z", 1000), image("20261201T110000Z-cccc", "2026-12-01T11:00:00Z", 10)], snapshot, want)).toBeNull();
    expect(imageDue([image(snapshot.id, "2026-12-06T11:00:00Z", 1)], snapshot, want)).toBeNull();
  });
});

describe("automatic images after backups, IMAGE_KEEP", () => {
  let source: TestChroma;
  let store: Store;
  let dataDir: string;
  const logged: [LogLevel, string, LogFields | undefined][] = [];
  const scratch: EmbeddedChroma[] = [];

  const service = (env: Record<string, string>) =>
    BackupService.fromConfig(loadConfig({ STORAGE: "memory", DATA_DIR: dataDir, ...env }, join), {
      chroma: new ChromaRest({ url: source.url }),
      storage: store.storage,
      log: (level, message, fields) => logged.push([level, message, fields]),
      images: embeddedImageMaking(loadConfig({ DATA_DIR: dataDir, ...env }, join), chromaVersion, async (dir) => {
        const c = await startEmbeddedChroma({ dataDir: dir });
        scratch.push(c);
        return c;
      }),
    });
  const snapshotsImaged = async () => (await listImages(store.storage)).map((m) => m.snapshot);

  beforeAll(async () => {
    source = await startTestChroma();
    await resetChroma(source.url, [{ name: "alpha", count: 200, dim: 8, seed: 51 }]);
    store = await makeStore("fs");
    dataDir = await mkdtemp(join(tmpdir(), "auto-image-"));
  });

  afterAll(async () => {
    for (const c of scratch) await c.stop();
    await rm(dataDir, { recursive: true, force: true });
    await store?.cleanup();
    await source?.close();
  });

  it("makes an image after the first backup, none after a small change, one again when the records grew by more than half; IMAGE_KEEP 1 keeps the newest", async () => {
    const svc = service({ IMAGE_INTERVAL: "24h" });
    const first = await svc.backup({});
    expect(first.skipped).toBe(false);
    await svc.imagesSettled();
    const firstId = first.skipped ? "" : first.snapshot.id;
    expect(await snapshotsImaged()).toEqual([firstId]);

    const alpha = await collectionId(source.url, "alpha");
    await addRecords(source.url, alpha, makeRecords(20, 8, 52, "small"));
    const second = await svc.backup({});
    expect(second.skipped).toBe(false);
    await svc.imagesSettled();
    expect(await snapshotsImaged(), "a fresh image: none made").toEqual([firstId]);

    await addRecords(source.url, alpha, makeRecords(150, 8, 53, "grown"));
    const third = await svc.backup({});
    await svc.imagesSettled();
    const thirdId = third.skipped ? "" : third.snapshot.id;
    expect(await snapshotsImaged(), "grown by more than half: a new image, and IMAGE_KEEP 1 forgot the older").toEqual([thirdId]);
    expect(logged.some(([level, message]) => level === "info" && /making a restore image of snapshot .* grew from 200 .* to 370/.test(message))).toBe(true);
    expect(logged.filter(([level]) => level === "error")).toEqual([]);
  });

  it("makes none with IMAGES=off, and none for a backup of some collections only", async () => {
    const before = await snapshotsImaged();
    const alpha = await collectionId(source.url, "alpha");
    await addRecords(source.url, alpha, makeRecords(400, 8, 54, "more"));
    const off = service({ IMAGES: "off" });
    expect((await off.backup({})).skipped).toBe(false);
    await off.imagesSettled();
    await addRecords(source.url, alpha, makeRecords(800, 8, 55, "evenmore"));
    const on = service({});
    expect((await on.backup({ collections: ["alpha"] })).skipped).toBe(false);
    await on.imagesSettled();
    expect(await snapshotsImaged()).toEqual(before);
  });

  it("prune applies IMAGE_KEEP to the images and reports them", async () => {
    const two = service({ IMAGE_KEEP: "2" });
    const made = await two.makeImage("latest");
    expect(made.drill.ok).toBe(true);
    const images = await snapshotsImaged();
    expect(images.length).toBe(2);
    const dry = await service({ IMAGE_KEEP: "1" }).prune({ dryRun: true });
    expect(dry.imagesDeleted).toEqual([images[1]]);
    expect(await snapshotsImaged()).toEqual(images);
    const real = await service({ IMAGE_KEEP: "1" }).prune({});
    expect(real.imagesDeleted).toEqual([images[1]]);
    expect(await snapshotsImaged()).toEqual([images[0]]);
  });

  it("makes one image at a time in an instance: a second request meanwhile is a 409 conflict", async () => {
    const svc = service({});
    const first = svc.makeImage("latest");
    await expect(svc.makeImage("latest")).rejects.toMatchObject({ name: "ConflictError" });
    expect((await first).drill.ok).toBe(true);
  });
});
