/**
 * The whole loop in the Node runtime (startService, as `npm start` runs it, in process):
 * a backup through the API makes a restore image in the background (never delaying the
 * backup's answer); a redeploy onto a fresh DATA_DIR with the same store starts from that
 * image; a stop abandons an image build under way.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listImages } from "../../lib/images/store.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { startService, type RunningService } from "../../runtime/node.js";
import { addRecords, createCollection, makeRecords } from "../fixtures/dataset.js";

const TOKEN = "auto-image-e2e-token";
const tempDirs: string[] = [];
const running = new Set<RunningService>();
type Line = { level: LogLevel; message: string; fields?: LogFields };

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `auto-image-e2e-${name}-`));
  tempDirs.push(dir);
  return dir;
}

async function start(store: string, lines: Line[]): Promise<RunningService> {
  const service = await startService(
    { STORAGE: "fs", BACKUP_DIR: store, PORT: "0", HOST: "127.0.0.1", CHROMA_PORT: "0", BACKUP_API_TOKEN: TOKEN, DATA_DIR: await tempDir("data"), BACKUP_INTERVAL: "off" },
    (level, message, fields) => lines.push({ level, message, fields }),
  );
  running.add(service);
  await service.restored;
  return service;
}

async function stop(service: RunningService): Promise<void> {
  running.delete(service);
  await service.stop();
}

const api = (service: RunningService, method: string, path: string) => fetch(`${service.url}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: method === "POST" ? "{}" : undefined });

afterAll(async () => {
  for (const s of running) await s.stop().catch(() => {});
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("automatic restore images in the Node runtime", () => {
  it("a backup makes an image in the background; a redeploy onto a fresh DATA_DIR starts from it", async () => {
    const store = await tempDir("store");
    const lines: Line[] = [];
    const first = await start(store, lines);
    // The service's own Chroma (the gate is closed to apps only until the startup restore is over, which it is).
    const chromaUrl = lines.find((l) => l.message === "started the embedded Chroma")!.fields!.url as string;
    const notes = await createCollection(chromaUrl, "notes", '{"hnsw":{"space":"l2"}}');
    await addRecords(chromaUrl, notes, makeRecords(300, 16, 71, "notes"));

    const backup = await api(first, "POST", "/backups");
    expect(backup.status).toBe(201);
    const { id } = (await backup.json()) as { id: string };
    await first.service.imagesSettled();
    expect((await listImages(withPrefix(fsStorage(store), "chromadb/"))).map((m) => m.snapshot)).toEqual([id]);
    expect(lines.find((l) => l.message === `restore image of snapshot ${id} made`)?.fields).toMatchObject({ from: "logical restore" });
    const status = (await (await api(first, "GET", "/status")).json()) as { images: { snapshot: string }[] };
    expect(status.images.map((i) => i.snapshot)).toEqual([id]);
    await stop(first);

    const redeployLines: Line[] = [];
    const second = await start(store, redeployLines);
    expect(redeployLines.find((l) => l.message === "startup restore: restored from an image")?.fields).toMatchObject({ image: id, snapshot: id, records: 300 });
    await stop(second);
  }, 180_000);

  it("a stop while an image is being made abandons it: no image committed, the scratch directory gone", async () => {
    const store = await tempDir("store");
    const lines: Line[] = [];
    const service = await start(store, lines);
    const chromaUrl = lines.find((l) => l.message === "started the embedded Chroma")!.fields!.url as string;
    await addRecords(chromaUrl, await createCollection(chromaUrl, "notes", '{"hnsw":{"space":"l2"}}'), makeRecords(2000, 16, 72, "notes"));
    expect((await api(service, "POST", "/backups")).status).toBe(201);
    await expect.poll(() => service.service.runningImage, { timeout: 30_000, interval: 20 }).not.toBeNull();
    await stop(service);
    expect(await listImages(withPrefix(fsStorage(store), "chromadb/"))).toEqual([]);
    expect(await readdir(service.config.dataDir)).not.toContain("image-scratch");
    expect(lines.filter((l) => l.level === "error")).toEqual([]);
  }, 180_000);
});
