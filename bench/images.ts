/**
 * Restore images (issue 16): cold start to `/ready` with an image vs with a logical restore.
 *
 *   npm run bench:images [-- --records N] [--large] [--dim D] [--out FILE] [--rss-trace]
 *
 * `--large` is `--records 100000`. What it does, on the benchmark's data (bench/dataset.ts,
 * 384 dimensions by default):
 * 1. seeds an embedded Chroma, takes snapshot A into a local store, stops Chroma and
 *    uploads its directory as the image of A (uploadImage);
 * 2. changes 1% of the records (deleted and added back with new content: an update),
 *    takes snapshot B into a copy of the store (B is newer than the image: a delta);
 * 3. starts the service as production does (`node dist/server.mjs`, built once) on a fresh
 *    DATA_DIR, each time until its first `/ready` 200: A with IMAGES=off (logical), A
 *    with the image, B with IMAGES=off, B with the image of A + catch-up;
 * 4. the floor: copying the image's files (the source directory) and syncing them; and,
 *    for information only, unpacking a `tar` + `gzip -1` of them (made beforehand) and syncing;
 * 5. makes images through the service (`POST /backups/:id/image`, RESTORE_ON_START=never):
 *    the first image of A (a logical restore into a scratch Chroma, then the upload) in a
 *    store holding A alone, then the image of B from it; the peak RSS of each service process.
 * `--rss-trace` prints, for each service started, its resident set (sampled every 50 ms) at
 * each of its log lines, to see which step grew it.
 * Prints the ratios of the table and writes them as JSON (--out, default
 * bench/results/images-<records>.json).
 */
import { spawn } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { freePort, startEmbeddedChroma } from "../lib/chroma/embedded.js";
import { loadableChromaVersion } from "../lib/chroma/launcher.js";
import { ChromaRest } from "../lib/chroma/rest.js";
import { downloadImage, uploadImage } from "../lib/images/store.js";
import { mapAhead } from "../lib/concurrency.js";
import { chunkKey } from "../lib/snapshot/chunk.js";
import { fetchByHash } from "../lib/snapshot/read-chunk.js";
import { inflateSection } from "../lib/snapshot/codec.js";
import { readAll } from "../lib/storage/streams.js";
import { takeSnapshot } from "../lib/snapshot/backup.js";
import { fsStorage } from "../lib/storage/fs.js";
import { withPrefix } from "../lib/storage/prefixed.js";
import { collectionSpecs, generateCollections, loadCorpus, rest, seedCollection, splitCounts, type GeneratedCollection } from "./dataset.js";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

function args(): { records: number; dim: number; out: string | null; rssTrace: boolean } {
  const argv = process.argv.slice(2);
  let records = 20_000;
  let dim = 384;
  let out: string | null = null;
  let rssTrace = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--records") records = Number(argv[++i]);
    else if (a === "--large") records = 100_000;
    else if (a === "--dim") dim = Number(argv[++i]);
    else if (a === "--out") out = argv[++i]!;
    else if (a === "--rss-trace") rssTrace = true;
    else if (a !== "--") throw new Error(`unknown option ${a} (--records N, --large, --dim D, --out FILE, --rss-trace)`);
  }
  if (!Number.isInteger(records) || records < 100) throw new Error("--records needs a whole number of at least 100");
  return { records, dim, out, rssTrace };
}

const { records: RECORDS, dim: DIM, out: OUT, rssTrace: RSS_TRACE } = args();
const TOKEN = "bench-images-token";
const work = await mkdtemp(join(tmpdir(), "bench-images-"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
/** Runs a command to its end; rejects unless it exits 0. */
const run = (command: string, argv: string[]) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(command, argv, { stdio: ["ignore", "ignore", "inherit"] });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${argv.join(" ")} exited with ${code}`))));
  });
const roundFields = (o: object) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "number" ? Math.round(v * 10) / 10 : v]));
const store = (dir: string) => withPrefix(fsStorage(dir), "chromadb/");

/** A subset of a generated collection (the records at `indexes`), for an update of those. */
function pick(c: GeneratedCollection, indexes: number[]): GeneratedCollection {
  const embeddings = new Float32Array(indexes.length * c.dim);
  indexes.forEach((from, to) => embeddings.set(c.embeddings.subarray(from * c.dim, (from + 1) * c.dim), to * c.dim));
  return { spec: c.spec, dim: c.dim, ids: indexes.map((i) => c.ids[i]!), embeddings, documents: indexes.map((i) => c.documents[i]!), metadatas: indexes.map((i) => c.metadatas[i]!) };
}

interface ColdStart {
  readyMs: number;
  /** Peak resident set of the service process (VmHWM) when it was first ready. */
  peakRssMb: number;
  /** The image path's log line, when it was taken. */
  image: Record<string, unknown> | null;
}

interface Service {
  port: number;
  pid: number;
  /** Its output so far (JSON log lines and anything else). */
  output(): string;
  exited(): boolean;
  /** Its peak resident set so far (VmHWM), in MB. */
  peakRssMb(): Promise<number>;
  /** Where the peak fell, from VmRSS sampled every 50 ms: the service's last log line before it. */
  peakDuring(): string;
  stop(): Promise<void>;
}

/** Spawns the built service (`node dist/server.mjs`, as production runs it) on a fresh DATA_DIR. */
async function startService(name: string, backupDir: string, env: Record<string, string>): Promise<Service> {
  const dataDir = join(work, `data-${name}`);
  await mkdir(dataDir);
  const port = await freePort();
  const fullEnv = { PATH: process.env.PATH, HOME: process.env.HOME, PORT: String(port), CHROMA_PORT: String(await freePort()), DATA_DIR: dataDir, STORAGE: "fs", BACKUP_DIR: backupDir, BACKUP_API_TOKEN: TOKEN, ...env };
  const child = spawn(process.execPath, ["--enable-source-maps", "--max-semi-space-size=4", "dist/server.mjs"], { cwd: ROOT, env: fullEnv, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out += b.toString()));
  let exited = false;
  child.once("exit", () => (exited = true));
  let sampled = { rss: 0, at: 0 };
  const samples: { rss: number; at: number }[] = [];
  const sampler = setInterval(() => {
    readFile(`/proc/${child.pid}/status`, "utf8").then(
      (status) => {
        const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) / 1024;
        samples.push({ rss, at: Date.now() });
        if (rss > sampled.rss) sampled = { rss, at: Date.now() };
      },
      () => {},
    );
  }, 50);
  return {
    port,
    pid: child.pid!,
    peakDuring() {
      const lines = out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { time?: string; message?: string });
      const before = lines.filter((l) => l.time && Date.parse(l.time) <= sampled.at).pop();
      const trace = lines
        .filter((l) => l.time)
        .map((l) => `${samples.filter((x) => x.at <= Date.parse(l.time!)).reduce((m, x) => Math.max(m, x.rss), 0).toFixed(0)} MB ${String(l.message).slice(0, 60)}`);
      if (RSS_TRACE) console.log(trace.join("\n"));
      return `${sampled.rss.toFixed(0)} MB sampled, after "${before?.message ?? "(no log line yet)"}"`;
    },
    output: () => out,
    exited: () => exited,
    async peakRssMb() {
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1]) / 1024;
    },
    async stop() {
      clearInterval(sampler);
      try {
        process.kill(-child.pid!, "SIGKILL"); // the lifeline takes its Chroma down with it
      } catch {
        // gone
      }
      await new Promise((r) => (exited ? r(null) : child.once("exit", r)));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls the service's /ready until 200. */
async function untilReady(service: Service): Promise<void> {
  for (;;) {
    if (service.exited()) throw new Error(`the service exited before it was ready:\n${service.output().slice(-3000)}`);
    try {
      const res = await fetch(`http://127.0.0.1:${service.port}/ready`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(20);
  }
}

/** Starts the service on a fresh DATA_DIR and times it to the first /ready 200. */
async function coldStart(name: string, backupDir: string, images: boolean): Promise<ColdStart> {
  const started = performance.now();
  const service = await startService(name, backupDir, { IMAGES: images ? "on" : "off" });
  try {
    await untilReady(service);
    const readyMs = performance.now() - started;
    const peakRssMb = await service.peakRssMb();
    console.log(`  ${name}: peak RSS ${peakRssMb.toFixed(0)} MB; ${service.peakDuring()}`);
    const lines = service.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>);
    const image = lines.find((l) => l.message === "startup restore: restored from an image") ?? null;
    if (images && !image) throw new Error(`${name}: the image was not used:\n${lines.filter((l) => /image|logically/.test(String(l.message))).map((l) => JSON.stringify(l)).join("\n")}`);
    return { readyMs, peakRssMb, image };
  } finally {
    await service.stop();
  }
}

interface MadeImage {
  ms: number;
  /** Peak resident set of the service process (VmHWM) once the image was made; its scratch Chroma is another process. */
  peakRssMb: number;
  /** Its resident set when ready, before the request. */
  readyRssMb: number;
  uploadedBytes: number;
  bytes: number;
}

/** Makes the image of `snapshot` through the service (`POST /backups/:id/image`), as an operator or the automatic path does. */
async function makeImageThroughService(name: string, backupDir: string, snapshot: string): Promise<MadeImage> {
  const service = await startService(name, backupDir, { IMAGES: "on", RESTORE_ON_START: "never" });
  try {
    await untilReady(service);
    const readyRssMb = await service.peakRssMb();
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${service.port}/backups/${snapshot}/image`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(30 * 60_000) });
    const body = (await res.json()) as { image?: { bytes: number }; uploadedBytes?: number; drill?: { ok: boolean } };
    const ms = performance.now() - started;
    if (!res.ok || !body.drill?.ok) throw new Error(`${name}: POST /backups/${snapshot}/image answered ${res.status} ${JSON.stringify(body).slice(0, 2000)}`);
    const peakRssMb = await service.peakRssMb();
    console.log(`  ${name}: peak RSS ${peakRssMb.toFixed(0)} MB; ${service.peakDuring()}`);
    return { ms, peakRssMb, readyRssMb, uploadedBytes: body.uploadedBytes!, bytes: body.image!.bytes };
  } finally {
    await service.stop();
  }
}

try {
  console.log(`bench:images: ${RECORDS} records, ${DIM} dimensions, work dir ${work}`);
  const build = spawn(process.execPath, ["scripts/build.mjs"], { cwd: ROOT, stdio: "inherit" });
  await new Promise((resolve, reject) => build.once("exit", (code) => (code === 0 ? resolve(null) : reject(new Error(`build failed (${code})`)))));

  // 1. Snapshot A and its image.
  const specs = collectionSpecs("img");
  const collections = generateCollections({ specs, counts: splitCounts(RECORDS, specs), dim: DIM, seed: 16, corpus: loadCorpus(RECORDS) });
  const sourceDir = join(work, "source-chroma");
  const storeA = join(work, "store-a");
  let chroma = await startEmbeddedChroma({ dataDir: sourceDir });
  const ids = new Map<string, string>();
  let t = performance.now();
  for (const c of collections) ids.set(c.spec.name, await seedCollection(chroma.url, c));
  const seedMs = performance.now() - t;
  const a = await takeSnapshot(new ChromaRest({ url: chroma.url }), store(storeA));
  await chroma.stop();
  const storeMake = join(work, "store-make"); // snapshot A alone: the service makes its first image there (phase 4)
  await cp(storeA, storeMake, { recursive: true });
  t = performance.now();
  const uploaded = await uploadImage(store(storeA), sourceDir, {
    snapshot: a.id,
    chromaVersion: await loadableChromaVersion(),
    collections: collections.map((c) => ({ name: c.spec.name, records: c.ids.length, sampleIds: [c.ids[0]!, c.ids[c.ids.length - 1]!] })),
  });
  const uploadMs = performance.now() - t;
  const image = uploaded.manifest;
  console.log(`seeded in ${seconds(seedMs)}; snapshot A ${a.id}; image: ${mb(image.bytes)} of files, ${mb(image.storedBytes)} stored, uploaded in ${seconds(uploadMs)}`);

  // The floor: the image's bytes read and written once (a plain copy of the directory, synced).
  t = performance.now();
  await cp(sourceDir, join(work, "floor-copy"), { recursive: true });
  await run("sync", [join(work, "floor-copy")]);
  const floorMs = performance.now() - t;
  await rm(join(work, "floor-copy"), { recursive: true, force: true });

  // Informational: what the author measured, a tar + gzip -1 of the directory (made
  // beforehand, not timed) unpacked into a fresh folder and synced. The bar stays on the plain copy.
  const tarball = join(work, "source.tar.gz");
  await run("tar", ["-I", "gzip -1", "-cf", tarball, "-C", sourceDir, "."]);
  const untarDir = join(work, "floor-untar");
  await mkdir(untarDir);
  t = performance.now();
  await run("tar", ["-xzf", tarball, "-C", untarDir]);
  await run("sync", [untarDir]);
  const untarMs = performance.now() - t;
  const tarBytes = (await stat(tarball)).size;
  await rm(untarDir, { recursive: true, force: true });
  await rm(tarball, { force: true });
  console.log(`floors: plain copy + sync ${seconds(floorMs)}; tar -xzf (gzip -1, ${mb(tarBytes)}) + sync ${seconds(untarMs)}`);

  // Informational: the download alone (in this process, fs store) and the part of it that is inflate.
  const downloadDir = join(work, "download-alone");
  t = performance.now();
  await downloadImage(store(storeA), image, downloadDir);
  const downloadMs = performance.now() - t;
  await rm(downloadDir, { recursive: true, force: true });
  let inflateMs = 0;
  let inflatedBytes = 0;
  for (const ref of image.files.flatMap((f) => f.chunks)) {
    if (ref.codec === "raw") continue;
    const stored = await readAll(await store(storeA).get(chunkKey(ref.hash)));
    const started = performance.now();
    inflateSection(stored, ref.size);
    inflateMs += performance.now() - started;
    inflatedBytes += ref.size;
  }
  // The store's requests alone: every chunk fetched and checked (fetchByHash), nothing decoded or written.
  t = performance.now();
  const refs = image.files.flatMap((f) => f.chunks);
  for await (const fetched of mapAhead(refs, 32, (ref) => fetchByHash(store(storeA), ref))) if (!(fetched instanceof Uint8Array)) throw new Error(fetched.problem);
  const fetchMs = performance.now() - t;
  console.log(`download alone ${seconds(downloadMs)}: fetching and checking its ${refs.length} chunks alone ${seconds(fetchMs)}, inflate ~${seconds(inflateMs)} (${mb(inflatedBytes)} inflated, ${mb(image.bytes - inflatedBytes)} stored raw)`);

  // 2. Snapshot B: 1% of the records changed (deleted and added back with other content).
  const storeB = join(work, "store-b");
  await cp(storeA, storeB, { recursive: true });
  chroma = await startEmbeddedChroma({ dataDir: sourceDir });
  const changed = generateCollections({ specs, counts: splitCounts(RECORDS, specs), dim: DIM, seed: 61, corpus: loadCorpus(RECORDS) });
  let delta = 0;
  for (const [k, c] of collections.entries()) {
    const indexes = c.ids.map((_, i) => i).filter((i) => i % 100 === 37);
    const id = ids.get(c.spec.name)!;
    await rest(chroma.url, "POST", `/collections/${id}/delete`, JSON.stringify({ ids: indexes.map((i) => c.ids[i]!) }));
    const update = pick(changed[k]!, indexes);
    update.ids = indexes.map((i) => c.ids[i]!);
    await seedCollection(chroma.url, update, 5000, id);
    delta += indexes.length;
  }
  const b = await takeSnapshot(new ChromaRest({ url: chroma.url }), store(storeB));
  await chroma.stop();
  console.log(`snapshot B ${b.id}: ${delta} records changed (${((delta / RECORDS) * 100).toFixed(1)}%)`);

  // 3. Cold starts.
  const logicalA = await coldStart("logical-a", storeA, false);
  console.log(`cold start, logical restore of A: ${seconds(logicalA.readyMs)} (peak RSS ${logicalA.peakRssMb.toFixed(0)} MB)`);
  const imageA = await coldStart("image-a", storeA, true);
  console.log(`cold start, image of A: ${seconds(imageA.readyMs)} (peak RSS ${imageA.peakRssMb.toFixed(0)} MB) ${JSON.stringify(imageA.image)}`);
  const logicalB = await coldStart("logical-b", storeB, false);
  console.log(`cold start, logical restore of B: ${seconds(logicalB.readyMs)} (peak RSS ${logicalB.peakRssMb.toFixed(0)} MB)`);
  const imageB = await coldStart("image-b", storeB, true);
  console.log(`cold start, image of A + catch-up to B: ${seconds(imageB.readyMs)} (peak RSS ${imageB.peakRssMb.toFixed(0)} MB) ${JSON.stringify(imageB.image)}`);

  // 4. Making images through the service: the first (a logical restore of A into a scratch
  // Chroma, then the upload), then the image of B from it (download, catch-up, upload of what changed).
  const firstMade = await makeImageThroughService("make-a", storeMake, a.id);
  console.log(`made the image of A through the service: ${seconds(firstMade.ms)}, ${mb(firstMade.uploadedBytes)} uploaded, peak RSS ${firstMade.peakRssMb.toFixed(0)} MB (${firstMade.readyRssMb.toFixed(0)} MB when ready)`);
  await run("cp", ["-rn", `${storeB}/.`, storeMake]); // B's manifest and chunks (images already there are kept)
  const deltaMade = await makeImageThroughService("make-b", storeMake, b.id);
  console.log(`made the image of B from the image of A: ${seconds(deltaMade.ms)}, ${mb(deltaMade.uploadedBytes)} uploaded of ${mb(deltaMade.bytes)}, peak RSS ${deltaMade.peakRssMb.toFixed(0)} MB`);

  const ratios = {
    imageOverLogical: imageA.readyMs / logicalA.readyMs,
    imageOverFloor: imageA.readyMs / floorMs,
    imageDeltaOverLogical: imageB.readyMs / logicalB.readyMs,
  };
  const result = {
    records: RECORDS,
    dim: DIM,
    chromaVersion: image.chromaVersion,
    image: { bytes: image.bytes, storedBytes: image.storedBytes, files: image.files.length, uploadMs: Math.round(uploadMs) },
    deltaRecords: delta,
    download: { ms: Math.round(downloadMs), chunks: refs.length, fetchAndCheckMs: Math.round(fetchMs), inflateMs: Math.round(inflateMs), inflatedBytes, rawBytes: image.bytes - inflatedBytes },
    floorCopyMs: Math.round(floorMs),
    /** Informational (the issue's own measurement): tar -xzf of a gzip -1 tarball of the directory + sync. */
    floorUntarMs: Math.round(untarMs),
    tarGzBytes: tarBytes,
    coldStartMs: { logicalA: Math.round(logicalA.readyMs), imageA: Math.round(imageA.readyMs), logicalB: Math.round(logicalB.readyMs), imageDeltaB: Math.round(imageB.readyMs) },
    peakRssMb: { logicalA: Math.round(logicalA.peakRssMb), imageA: Math.round(imageA.peakRssMb), logicalB: Math.round(logicalB.peakRssMb), imageDeltaB: Math.round(imageB.peakRssMb) },
    imagePath: { a: imageA.image, b: imageB.image },
    /** POST /backups/:id/image through the service: the first image (logical restore in a scratch Chroma) and the next (from the first). */
    made: { first: roundFields(firstMade), fromPrevious: roundFields(deltaMade) },
    ratios,
  };
  console.log("");
  console.log(`| figure (${RECORDS} records) | measured | bar |`);
  console.log("| --- | --- | --- |");
  console.log(`| cold start to /ready with an image / with a logical restore | ${ratios.imageOverLogical.toFixed(3)} (${seconds(imageA.readyMs)} / ${seconds(logicalA.readyMs)}) | ${RECORDS >= 100_000 ? "<= 0.15" : "<= 0.25"} |`);
  console.log(`| cold start with an image / read+write the image's bytes | ${ratios.imageOverFloor.toFixed(2)} (${seconds(imageA.readyMs)} / ${seconds(floorMs)} for ${mb(image.bytes)}) | <= 3.0 |`);
  console.log(`| (informational) cold start with an image / tar -xzf + sync | ${(imageA.readyMs / untarMs).toFixed(2)} (${seconds(imageA.readyMs)} / ${seconds(untarMs)} for ${mb(tarBytes)} of gzip -1) | - |`);
  console.log(`| image + 1% delta / logical restore | ${ratios.imageDeltaOverLogical.toFixed(3)} (${seconds(imageB.readyMs)} / ${seconds(logicalB.readyMs)}) | <= 0.35 |`);
  console.log(`| peak RSS of the service, restoring from the image | ${imageA.peakRssMb.toFixed(0)} MB (delta: ${imageB.peakRssMb.toFixed(0)} MB) | <= 200 MB |`);
  console.log(`| peak RSS of the service, making an image (first / from the previous) | ${firstMade.peakRssMb.toFixed(0)} MB / ${deltaMade.peakRssMb.toFixed(0)} MB | <= 200 MB |`);
  const out = OUT ?? join(ROOT, "bench", "results", `images-${RECORDS}.json`);
  await writeFile(out, JSON.stringify(result, null, 2) + "\n");
  console.log(`\nwritten to ${out}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
