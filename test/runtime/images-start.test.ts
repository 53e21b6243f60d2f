/**
 * The startup restore from a restore image, end to end through `npm start` (the real
 * process tree, as test/runtime/start.test.ts runs it): a store with a snapshot and an
 * image of it made from a real Chroma's directory, a fresh DATA_DIR each time.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, startEmbeddedChroma } from "../../lib/chroma/embedded.js";
import { loadableChromaVersion } from "../../lib/chroma/launcher.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { imageKey, serializeImageManifest } from "../../lib/images/manifest.js";
import { readImage, uploadImage } from "../../lib/images/store.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import type { Storage } from "../../lib/storage/types.js";
import { addRecords, collectionId, createCollection, deleteRecords, dumpCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { logLines, type LogLine } from "../fixtures/log-lines.js";
import { expectSameRecords, parseDump, type DumpedRecord } from "../snapshot/compare.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";
import { logLine as logLineWithin, until } from "../fixtures/until.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const L2 = '{"hnsw":{"space":"l2"}}';
const TOKEN = "images-start-token";

interface Service {
  child: ChildProcess;
  pgid: number;
  url: string;
  out: () => string;
  logs: () => LogLine[];
  exit: Promise<unknown>;
}

const services = new Set<Service>();
const tempDirs: string[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `images-${name}-`));
  tempDirs.push(dir);
  return dir;
}

async function startNpm(store: string): Promise<{ service: Service; dataDir: string }> {
  const dataDir = await tempDir("data");
  const port = await freePort();
  const env = { ...serviceFreeEnv(), PORT: String(port), CHROMA_PORT: String(await freePort()), DATA_DIR: dataDir, BACKUP_API_TOKEN: TOKEN, STORAGE: "fs", BACKUP_DIR: store };
  const child = spawn("npm", ["start"], { cwd: ROOT, detached: true, stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (out += b.toString()));
  const exit = new Promise((resolve) => child.once("exit", resolve));
  const service: Service = { child, pgid: child.pid!, url: `http://127.0.0.1:${port}`, out: () => out, logs: () => logLines(out), exit };
  services.add(service);
  return { service, dataDir };
}

afterEach(async () => {
  for (const s of [...services]) {
    services.delete(s);
    try {
      process.kill(-s.pgid, "SIGKILL");
    } catch {
      // already gone
    }
    await Promise.race([s.exit, sleep(5000)]);
  }
});

afterAll(async () => {
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});


const logLine = (service: Service, message: string) => logLineWithin(service, message, 5000);
const hasLog = (service: Service, message: string) => service.logs().some((l) => l.message === message);

const ready = (service: Service) =>
  until(
    "GET /ready 200",
    service,
    async () => {
      try {
        const res = await fetch(`${service.url}/ready`, { signal: AbortSignal.timeout(1000) });
        return res.ok ? true : undefined;
      } catch {
        return undefined;
      }
    },
    60_000,
  );

type Dumps = Map<string, Map<string, DumpedRecord>>;

async function dumps(url: string): Promise<Dumps> {
  const out: Dumps = new Map();
  for (const name of await listCollectionNames(url)) out.set(name, parseDump(await dumpCollection(url, await collectionId(url, name))));
  return out;
}

function expectSameDumps(expected: Dumps, actual: Dumps): void {
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [name, records] of expected) expectSameRecords(records, actual.get(name)!, false);
}

const storeOf = (dir: string): Storage => withPrefix(fsStorage(dir), "chromadb/");

/** Starts the service on `store` with a fresh DATA_DIR; resolves at the first ready with what its Chroma holds. */
async function coldStart(store: string): Promise<{ service: Service; dataDir: string; held: Dumps; readyMs: number }> {
  const started = Date.now();
  const { service, dataDir } = await startNpm(store);
  await ready(service);
  const readyMs = Date.now() - started;
  const chromaUrl = (await logLine(service, "started the embedded Chroma")).url as string;
  return { service, dataDir, held: await dumps(chromaUrl), readyMs };
}

async function expectNothingHalfPlaced(dataDir: string): Promise<void> {
  const entries = await readdir(dataDir);
  expect(entries.filter((e) => e.includes(".image-") || e === "image-restore.json")).toEqual([]);
}

let imageStore: string;
let deltaStore: string;
let otherVersionStore: string;
let damagedStore: string;
let a: Manifest;
let b: Manifest;
let atA: Dumps;
let atB: Dumps;

beforeAll(async () => {
  // Snapshot A and its image, from a real Chroma's directory (stopped: never a directory in the middle of a write).
  imageStore = await tempDir("store-image");
  const chromaDir = await tempDir("source-chroma");
  let chroma = await startEmbeddedChroma({ dataDir: chromaDir });
  try {
    const notes = await createCollection(chroma.url, "notes", L2, '{"purpose":"images e2e"}');
    await addRecords(chroma.url, notes, makeRecords(2000, 32, 21, "notes"));
    const tags = await createCollection(chroma.url, "tags", L2);
    await addRecords(chroma.url, tags, makeRecords(40, 32, 22, "tags"));
    atA = await dumps(chroma.url);
    a = await takeSnapshot(new ChromaRest({ url: chroma.url }), storeOf(imageStore));
  } finally {
    await chroma.stop();
  }
  await uploadImage(storeOf(imageStore), chromaDir, {
    snapshot: a.id,
    chromaVersion: await loadableChromaVersion(),
    collections: [
      { name: "notes", records: 2000, sampleIds: ["notes-0", "notes-1999"] },
      { name: "tags", records: 40, sampleIds: ["tags-7"] },
    ],
  });

  // The same store plus snapshot B, newer than the image: records added, changed, deleted, a collection created.
  deltaStore = await tempDir("store-delta");
  await cp(imageStore, deltaStore, { recursive: true });
  chroma = await startEmbeddedChroma({ dataDir: chromaDir });
  try {
    const notes = await collectionId(chroma.url, "notes");
    await addRecords(chroma.url, notes, makeRecords(2030, 32, 21, "notes").slice(2000));
    await addRecords(chroma.url, notes, makeRecords(2000, 32, 99, "notes").filter((_, i) => i % 100 === 3), "upsert");
    await deleteRecords(chroma.url, notes, ["notes-10", "notes-500", "notes-1500"]);
    await addRecords(chroma.url, await createCollection(chroma.url, "extra", L2), makeRecords(25, 32, 23, "extra"));
    atB = await dumps(chroma.url);
    b = await takeSnapshot(new ChromaRest({ url: chroma.url }), storeOf(deltaStore));
  } finally {
    await chroma.stop();
  }

  // An image that says another Chroma made it (its manifest rewritten through the store's serializer, so its checksum holds).
  otherVersionStore = await tempDir("store-other-version");
  await cp(imageStore, otherVersionStore, { recursive: true });
  const image = await readImage(storeOf(imageStore), a.id);
  await storeOf(otherVersionStore).put(imageKey(a.id), serializeImageManifest({ ...image, chromaVersion: "0.0.0-other" }));

  // An image with a damaged chunk (of its largest file).
  damagedStore = await tempDir("store-damaged");
  await cp(imageStore, damagedStore, { recursive: true });
  const largest = [...image.files].sort((x, y) => y.size - x.size)[0]!;
  const path = join(damagedStore, "chromadb", chunkKey(largest.chunks[0]!.hash));
  const bytes = await readFile(path);
  bytes[bytes.length >> 1]! ^= 0x55;
  await writeFile(path, bytes);
}, 240_000);

describe("npm start: the startup restore from a restore image", () => {
  it("a fresh DATA_DIR with the snapshot's own image: placed, checked, ready; every record equal to the snapshot", async () => {
    const { service, dataDir, held, readyMs } = await coldStart(imageStore);
    const used = await logLine(service, "startup restore: restored from an image");
    expect(used).toMatchObject({ image: a.id, snapshot: a.id, upserted: 0, deleted: 0, records: 2040 });
    for (const step of ["downloadMs", "startMs", "checkMs", "catchUpMs", "totalMs"]) expect(typeof used[step]).toBe("number");
    expect(hasLog(service, "startup restore: restored the newest snapshot"), "no logical restore").toBe(false);
    expectSameDumps(atA, held);
    await expectNothingHalfPlaced(dataDir);
    // /status counts the image in the RTO estimate (and the restore it just measured).
    const status = (await (await fetch(`${service.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { rto: { basis: string }; startupRestore: { state: string } };
    expect(status.startupRestore.state).toBe("done");
    expect(status.rto.basis).toMatch(new RegExp(`^from the image of ${a.id} .*1 image restore\\(s\\) measured`));
    console.log(`npm start -> /ready from an image of 2,040 records: ${readyMs} ms (${JSON.stringify({ downloadMs: used.downloadMs, startMs: used.startMs, checkMs: used.checkMs })})`);
  }, 90_000);

  it("a newer snapshot than the image: the image, then the records that differ (delta); every record equal to the newer snapshot", async () => {
    const { service, dataDir, held, readyMs } = await coldStart(deltaStore);
    const used = await logLine(service, "startup restore: restored from an image");
    expect(used).toMatchObject({ image: a.id, snapshot: b.id, collectionsRestored: ["extra"], deleted: 3 });
    expect(used.upserted as number).toBeGreaterThanOrEqual(30 + 20);
    expect(used.upserted as number).toBeLessThan(1000);
    expect(hasLog(service, "startup restore: restored the newest snapshot")).toBe(false);
    expectSameDumps(atB, held);
    await expectNothingHalfPlaced(dataDir);
    console.log(`npm start -> /ready from an image + delta (${used.upserted as number} upserted, ${used.deleted as number} deleted, 25 in a new collection): ${readyMs} ms`);
  }, 90_000);

  it("an image from another Chroma version: not used, a logical restore, logged", async () => {
    const { service, dataDir, held } = await coldStart(otherVersionStore);
    const why = await logLine(service, "startup restore: restoring logically (no usable image)");
    expect(why.reason).toMatch(new RegExp(`made by Chroma 0\\.0\\.0-other; this is Chroma ${(await loadableChromaVersion()).replace(/\./g, "\\.")}`));
    await logLine(service, "startup restore: restored the newest snapshot");
    expect(hasLog(service, "startup restore: restored from an image")).toBe(false);
    expectSameDumps(atA, held);
    await expectNothingHalfPlaced(dataDir);
  }, 90_000);

  it("an image with a damaged chunk: nothing placed, a logical restore, logged", async () => {
    const { service, dataDir, held } = await coldStart(damagedStore);
    const why = await logLine(service, "startup restore: the image could not be used; restoring logically");
    expect(why.error).toMatch(/chunk|sha256|checksum/i);
    await logLine(service, "startup restore: restored the newest snapshot");
    expect(hasLog(service, "startup restore: restored from an image")).toBe(false);
    expectSameDumps(atA, held);
    await expectNothingHalfPlaced(dataDir);
  }, 90_000);

  it("while the image is placed, the HTTP API answers: /health 200, /ready 503 with the step, other routes 503 chroma_unavailable (after auth)", async () => {
    // One chunk of the image is a FIFO: reading it blocks until the test writes its bytes,
    // which holds the download half way for as long as the test looks. A chunk the image
    // lists once: each read of a FIFO holds one of libuv's 4 threads, which the service's
    // hashing needs too.
    const heldStore = await tempDir("store-held");
    await cp(imageStore, heldStore, { recursive: true });
    const image = await readImage(storeOf(imageStore), a.id);
    const listed = image.files.flatMap((f) => f.chunks.map((c) => c.hash));
    const once = listed.find((h, i) => i > 0 && listed.indexOf(h) === i && listed.lastIndexOf(h) === i)!;
    const chunkPath = join(heldStore, "chromadb", chunkKey(once));
    const bytes = await readFile(chunkPath);
    await rm(chunkPath);
    execFileSync("mkfifo", [chunkPath]);
    const { service, dataDir } = await startNpm(heldStore);
    const health = await until(
      "GET /health 200",
      service,
      async () => {
        try {
          const res = await fetch(`${service.url}/health`, { signal: AbortSignal.timeout(1000) });
          return res.ok ? ((await res.json()) as { ok: boolean }) : undefined;
        } catch {
          return undefined; // not listening yet
        }
      },
      60_000,
    );
    expect(health.ok).toBe(true);
    await logLine(service, "startup restore: placing a restore image");
    const notReady = await fetch(`${service.url}/ready`, { signal: AbortSignal.timeout(5000) });
    expect(notReady.status).toBe(503);
    expect(((await notReady.json()) as { reason: string }).reason).toMatch(/^startup restore running: placing a restore image/);
    const anonymous = await fetch(`${service.url}/backups`, { signal: AbortSignal.timeout(5000) });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Bearer/);
    const list = await fetch(`${service.url}/backups`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(5000) });
    expect(list.status).toBe(503);
    expect(list.headers.get("retry-after")).toBe("2");
    expect(((await list.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: "chroma_unavailable", message: expect.stringMatching(/starting.*placing a restore image.*retry/s) });
    expect(hasLog(service, "startup restore: restored from an image"), "the download is held").toBe(false);

    await writeFile(chunkPath, bytes); // the reader waits on the FIFO: the download goes on
    await ready(service);
    await logLine(service, "startup restore: restored from an image");
    const chromaUrl = (await logLine(service, "started the embedded Chroma")).url as string;
    expectSameDumps(atA, await dumps(chromaUrl));
    await expectNothingHalfPlaced(dataDir);
  }, 90_000);
});
