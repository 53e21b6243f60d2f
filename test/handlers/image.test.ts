/**
 * POST /backups/:id/image through the app, with a real Chroma, the fs store and a real
 * scratch Chroma for the image (the Node runtime's wiring: runtime/images.ts); GET
 * /backups/:id shows the image's drill, GET /status lists the images.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { loadConfig } from "../../lib/config.js";
import { silentLogger } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { embeddedImageMaking } from "../../runtime/images.js";
import { loadableChromaVersion } from "../../lib/chroma/launcher.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, makeRecords } from "../fixtures/dataset.js";
import { client, expectError, makeApp, makeStore, resetChroma, UNKNOWN_ID, type Store } from "./harness.js";

/** The bindings the scratch Chroma will run (probed once). */
const chromaVersion = await loadableChromaVersion();
let source: TestChroma;
let store: Store;
let dataDir: string;
const scratch: EmbeddedChroma[] = [];

function serviceFor(env: Record<string, string>): BackupService {
  const config = loadConfig({ STORAGE: "memory", DATA_DIR: dataDir, ...env }, join);
  const images = config.chroma.url
    ? undefined
    : embeddedImageMaking(config, chromaVersion, async (dir) => {
        const c = await startEmbeddedChroma({ dataDir: dir });
        scratch.push(c);
        return c;
      });
  return BackupService.fromConfig(config, { chroma: new ChromaRest({ url: source.url }), storage: store.storage, log: silentLogger, images });
}

beforeAll(async () => {
  source = await startTestChroma();
  await resetChroma(source.url, [
    { name: "alpha", count: 250, dim: 8, seed: 61 },
    { name: "beta", count: 90, dim: 4, seed: 62 },
  ]);
  store = await makeStore("fs");
  dataDir = await mkdtemp(join(tmpdir(), "image-route-"));
});

afterAll(async () => {
  for (const c of scratch) await c.stop();
  await rm(dataDir, { recursive: true, force: true });
  await store?.cleanup();
  await source?.close();
});

describe("POST /backups/:id/image", () => {
  it("makes the image now: 200 with the image, the bytes uploaded and its drill; GET /backups/:id shows the drill, /status lists the image", async () => {
    const service = serviceFor({ IMAGE_KEEP: "1" });
    const api = client(makeApp(service));
    const first = await api.post("/backups", {});
    expect(first.status).toBe(201);
    await service.imagesSettled(); // the automatic image of the first snapshot
    await addRecords(source.url, await collectionId(source.url, "alpha"), makeRecords(10, 8, 63, "late"));
    const second = await api.post("/backups", {});
    expect(second.status).toBe(201);
    await service.imagesSettled(); // fresh: none made

    const made = await api.post(`/backups/${second.body.id}/image`);
    expect(made.status, made.text).toBe(200);
    expect(made.body.image).toEqual({ snapshot: second.body.id, chromaVersion: expect.any(String), bytes: expect.any(Number), createdAt: expect.any(String) });
    expect(made.body.uploadedBytes).toBeGreaterThan(0);
    expect(made.body.drill).toMatchObject({ snapshot: second.body.id, via: "image", ok: true, records: 350 });
    expect(made.body.imagesPruned).toEqual([first.body.id]);

    const got = await api.get(`/backups/${second.body.id}`);
    expect(got.body.drill).toEqual(made.body.drill);

    const status = await api.get("/status");
    expect(status.body.images).toEqual([made.body.image]);
    expect(status.body.errors).toEqual([]);
  });

  it("answers 404 for an unknown snapshot and 400 for a malformed id", async () => {
    const api = client(makeApp(serviceFor({})));
    expectError(await api.post(`/backups/${UNKNOWN_ID}/image`), 404, "not_found");
    expectError(await api.post("/backups/not-an-id/image"), 400, "invalid_request");
  });

  it("answers 409 images_unavailable with IMAGES=off or a CHROMA_URL, saying why", async () => {
    expectError(await client(makeApp(serviceFor({ IMAGES: "off" }))).post("/backups/latest/image"), 409, "images_unavailable", /IMAGES=off/);
    expectError(await client(makeApp(serviceFor({ CHROMA_URL: source.url }))).post("/backups/latest/image"), 409, "images_unavailable", /CHROMA_URL/);
  });

  it("requires the bearer token", async () => {
    const reply = await client(makeApp(serviceFor({}))).post("/backups/latest/image", undefined, { auth: false });
    expectError(reply, 401, "unauthorized");
  });
});
