/**
 * One measurement of the benchmark, in a fresh process, so that no measurement's heap, JIT
 * state or memory weighs on another, and so that peak RSS is that of the process doing
 * the work. Prints one line `RESULT <json>` on stdout.
 *
 * bench/run.ts bundles this file with esbuild once per run, as `npm start` bundles the
 * service (scripts/build.mjs), and spawns `node <the flags of package.json's start
 * script> dist/bench/worker-<hash>.mjs '<json job>'`: plain node, as the service runs. Under `node --import tsx` (tsx's loader
 * is a second V8 isolate in its own thread, plus esbuild) every figure would carry ~45 MB
 * of RSS that the service does not.
 *
 * RSS is sampled every 10 ms (process.memoryUsage().rss) from the start of the job to
 * its end, and once more at the end; the peak and the RSS before the work are reported.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createGzip } from "node:zlib";
import type { ChromaClient, Collection, Metadata } from "chromadb";
import { ChromaRest } from "../lib/chroma/rest.js";
import { takeSnapshot } from "../lib/snapshot/backup.js";
import { chunkKey, chunkSections as sectionsOf } from "../lib/snapshot/chunk.js";
import { readManifest } from "../lib/snapshot/catalog.js";
import { restoreSnapshot } from "../lib/snapshot/restore.js";
import { verifySnapshot } from "../lib/snapshot/verify.js";
import { fsStorage } from "../lib/storage/fs.js";
import { withPrefix } from "../lib/storage/prefixed.js";
import { collectionSpecs, generateCollections, loadCorpus, type CollectionSpec } from "./dataset.js";
import { RESULT_PREFIX, STORAGE_PREFIX, type DatasetParams, type Job } from "./jobs.js";

const MiB = 1024 * 1024;

/** Stored bytes of the chunks' embedding and text sections and headers, outside the timing. */
async function chunkSections(storeDir: string, hashes: string[]): Promise<{ embeddings: number; text: number; headers: number }> {
  const sections = { embeddings: 0, text: 0, headers: 0 };
  for (const hash of hashes) {
    const found = sectionsOf(await readFile(join(storeDir, STORAGE_PREFIX, chunkKey(hash))));
    if (!found) throw new Error(`chunk ${hash} is not a chunk`);
    sections.headers += found.header;
    sections.embeddings += found.embeddings;
    sections.text += found.text;
  }
  return sections;
}

class RssSampler {
  readonly startMb: number;
  private peak: NodeJS.MemoryUsage;
  private timer: NodeJS.Timeout;
  constructor() {
    this.peak = process.memoryUsage();
    this.startMb = this.peak.rss / MiB;
    this.timer = setInterval(() => this.sample(), 10);
  }
  sample(): void {
    const usage = process.memoryUsage();
    if (usage.rss > this.peak.rss) this.peak = usage;
  }
  /** Peak RSS, and what the heap and the buffers held at that moment. */
  stop(): { startRssMb: number; peakRssMb: number; atPeak: { heapUsedMb: number; heapTotalMb: number; externalMb: number; arrayBuffersMb: number } } {
    this.sample();
    clearInterval(this.timer);
    const p = this.peak;
    return {
      startRssMb: round1(this.startMb),
      peakRssMb: round1(p.rss / MiB),
      atPeak: { heapUsedMb: round1(p.heapUsed / MiB), heapTotalMb: round1(p.heapTotal / MiB), externalMb: round1(p.external / MiB), arrayBuffersMb: round1(p.arrayBuffers / MiB) },
    };
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/**
 * The plain client, imported only by the jobs that use it, so that the backup and
 * restore workers carry no more than the service itself does.
 */
async function clientFor(url: string): Promise<ChromaClient> {
  const { ChromaClient } = await import("chromadb");
  const { hostname, port } = new URL(url);
  return new ChromaClient({ host: hostname, port: Number(port), ssl: false });
}

function store(storeDir: string) {
  return withPrefix(fsStorage(storeDir), STORAGE_PREFIX);
}

/** Pages through a collection with the plain client; `onPage` sees each page. */
async function readCollection(
  collection: Collection,
  pageSize: number,
  concurrency: number,
  byIds: boolean,
  onPage?: (page: Awaited<ReturnType<Collection["get"]>>) => void | Promise<void>,
): Promise<number> {
  // By offset, or by ids: all ids listed in one get first, then pages of them (no offset
  // for Chroma to skip; what the backup does).
  const pages: (() => ReturnType<Collection["get"]>)[] = [];
  if (byIds) {
    const { ids } = await collection.get({ include: [] });
    for (let o = 0; o < ids.length; o += pageSize) pages.push(() => collection.get({ ids: ids.slice(o, o + pageSize), include: ["embeddings", "documents", "metadatas"] }));
  } else {
    const count = await collection.count();
    for (let o = 0; o < count; o += pageSize) pages.push(() => collection.get({ limit: pageSize, offset: o, include: ["embeddings", "documents", "metadatas"] }));
  }
  let records = 0;
  if (concurrency <= 1 || onPage) {
    for (const get of pages) {
      const page = await get();
      records += page.ids.length;
      await onPage?.(page);
    }
    return records;
  }
  // Several pages in flight: each worker takes the next page.
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < pages.length) {
        const page = await pages[next++]!();
        records += page.ids.length;
      }
    }),
  );
  return records;
}

async function rawRead(url: string, names: string[], pageSize: number, concurrency: number, byIds: boolean): Promise<{ ms: number; records: number }> {
  const client = await clientFor(url);
  const t0 = performance.now();
  let records = 0;
  for (const name of names) {
    const collection = await client.getCollection({ name });
    records += await readCollection(collection, pageSize, concurrency, byIds);
  }
  return { ms: performance.now() - t0, records };
}

/** Metadata with its keys in order: Chroma hands keys back in a varying order, which would only make gzip's job harder. */
function sortKeys(m: Metadata | null): Metadata | null {
  if (!m) return m;
  return Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]!]));
}

/** Bytes out of a gzip stream fed piece by piece (never one giant string). */
class GzipCounter {
  private gz = createGzip();
  private bytes = 0;
  private done: Promise<void>;
  constructor() {
    this.gz.on("data", (b: Buffer) => (this.bytes += b.byteLength));
    this.done = new Promise((resolve, reject) => {
      this.gz.on("end", resolve);
      this.gz.on("error", reject);
    });
  }
  async write(text: string | Uint8Array): Promise<void> {
    if (!this.gz.write(text)) await new Promise((r) => this.gz.once("drain", r));
  }
  async end(): Promise<number> {
    this.gz.end();
    await this.done;
    return this.bytes;
  }
}

/**
 * The size yardsticks, computed from the records as the plain client reads them:
 * - float32PlusGzText: per collection, the embeddings as raw float32 plus one gzip stream
 *   (zlib default level) of the text columns: ids, documents, metadatas as JSON (keys
 *   sorted; numbers as the client has them, so a float 3.0 is the shorter 3);
 * - naiveJsonGz: per collection, `[{"id":…,"embedding":[…],"document":…,"metadata":{…}},…]`
 *   gzipped (default level), numbers as the client gets them (shortest float32 text);
 * - float32Gz (for reference): the float32 bytes gzipped too.
 */
async function baselines(url: string, names: string[], pageSize: number) {
  const client = await clientFor(url);
  const perCollection: { name: string; records: number; float32Bytes: number; gzTextBytes: number; textBytes: number; float32GzBytes: number; naiveJsonGzBytes: number }[] = [];
  for (const name of names) {
    const collection = await client.getCollection({ name });
    const ids: string[] = [];
    const documents: (string | null)[] = [];
    const metadatas: (Metadata | null)[] = [];
    const naive = new GzipCounter();
    const floatGz = new GzipCounter();
    let float32Bytes = 0;
    let first = true;
    await naive.write("[");
    await readCollection(collection, pageSize, 1, false, async (page) => {
      const parts: string[] = [];
      const dim = page.embeddings[0]?.length ?? 0;
      const floats = new Float32Array(page.ids.length * dim);
      for (let i = 0; i < page.ids.length; i++) {
        ids.push(page.ids[i]!);
        documents.push(page.documents[i] ?? null);
        metadatas.push(page.metadatas[i] ?? null);
        const record = { id: page.ids[i], embedding: page.embeddings[i], document: page.documents[i] ?? null, metadata: page.metadatas[i] ?? null };
        parts.push(`${first ? "" : ","}${JSON.stringify(record)}`);
        first = false;
        floats.set(page.embeddings[i]!, i * dim);
      }
      float32Bytes += floats.byteLength;
      await floatGz.write(new Uint8Array(floats.buffer));
      await naive.write(parts.join(""));
    });
    await naive.write("]");
    // The text columns in one gzip stream per collection: ids, documents, metadatas, each a JSON array.
    const text = new GzipCounter();
    let textBytes = 0;
    const put = async (piece: string) => {
      textBytes += Buffer.byteLength(piece);
      await text.write(piece);
    };
    await put(`${JSON.stringify(ids)}\n`);
    await put(`${JSON.stringify(documents)}\n`);
    for (let i = 0; i < metadatas.length; i += 1000) {
      const piece = metadatas
        .slice(i, i + 1000)
        .map((m) => JSON.stringify(sortKeys(m)))
        .join(",");
      await put(`${i === 0 ? "[" : ","}${piece}`);
    }
    await put(metadatas.length === 0 ? "[]" : "]");
    perCollection.push({
      name,
      records: ids.length,
      float32Bytes,
      gzTextBytes: await text.end(),
      textBytes,
      float32GzBytes: await floatGz.end(),
      naiveJsonGzBytes: await naive.end(),
    });
  }
  const sum = (k: "float32Bytes" | "gzTextBytes" | "textBytes" | "float32GzBytes" | "naiveJsonGzBytes" | "records") => perCollection.reduce((n, c) => n + c[k], 0);
  // For reference: the same text columns with metadata exactly as Chroma holds it, keys
  // sorted (the client turns a float 3.0 into 3, so its text is a little shorter).
  const rest = new ChromaRest({ url });
  let exactGzTextBytes = 0;
  for (const info of (await rest.listCollections()).filter((c) => names.includes(c.name))) {
    const gz = new GzipCounter();
    const ids: string[] = [];
    const documents: (string | null)[] = [];
    const metadatas: string[] = [];
    for (let offset = 0; ; offset += pageSize) {
      const page = await rest.getRecords(info.id, offset, pageSize);
      ids.push(...page.ids);
      documents.push(...page.documents.values());
      metadatas.push(...page.metadatas);
      if (page.ids.length < pageSize) break;
    }
    await gz.write(`${JSON.stringify(ids)}\n`);
    await gz.write(`${JSON.stringify(documents)}\n`);
    for (let i = 0; i < metadatas.length; i += 1000) await gz.write(`${i === 0 ? "[" : ","}${metadatas.slice(i, i + 1000).join(",")}`);
    await gz.write(metadatas.length === 0 ? "[]" : "]");
    exactGzTextBytes += await gz.end();
  }
  return {
    float32PlusExactGzTextBytes: sum("float32Bytes") + exactGzTextBytes,
    records: sum("records"),
    float32PlusGzTextBytes: sum("float32Bytes") + sum("gzTextBytes"),
    float32Bytes: sum("float32Bytes"),
    textBytes: sum("textBytes"),
    gzTextBytes: sum("gzTextBytes"),
    float32GzPlusGzTextBytes: sum("float32GzBytes") + sum("gzTextBytes"),
    naiveJsonGzBytes: sum("naiveJsonGzBytes"),
    perCollection,
  };
}

interface ClientRecords {
  spec: CollectionSpec;
  ids: string[];
  embeddings: number[][];
  documents: string[];
  metadatas: Metadata[];
}

/** The seeded records, rebuilt from the seed and held as the client takes them (number[][], objects). */
function clientRecords(params: DatasetParams): ClientRecords[] {
  const specs = collectionSpecs(params.prefix);
  const total = params.counts.reduce((a, b) => a + b, 0);
  const corpus = loadCorpus(params.corpusOffset + total);
  return generateCollections({ specs, counts: params.counts, dim: params.dim, seed: params.seed, corpus, corpusOffset: params.corpusOffset }).map((c) => ({
    spec: c.spec,
    ids: c.ids,
    embeddings: c.ids.map((_, i) => Array.from(c.embeddings.subarray(i * c.dim, (i + 1) * c.dim))),
    documents: c.documents,
    metadatas: c.metadatas.map((m) => JSON.parse(m) as Metadata),
  }));
}

/** Adds the records into a fresh collection with the plain client: `batchSize` per add, `concurrency` adds in flight. */
async function clientWrite(client: ChromaClient, name: string, r: ClientRecords, limit: number, batchSize: number, concurrency: number): Promise<void> {
  const collection = await client.createCollection({
    name,
    embeddingFunction: null,
    configuration: { hnsw: { space: r.spec.space } },
    metadata: JSON.parse(r.spec.metadataJson) as Metadata | undefined ?? undefined,
  });
  const starts: number[] = [];
  for (let s = 0; s < limit; s += batchSize) starts.push(s);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, starts.length) }, async () => {
      while (next < starts.length) {
        const s = starts[next++]!;
        const e = Math.min(limit, s + batchSize);
        await collection.add({ ids: r.ids.slice(s, e), embeddings: r.embeddings.slice(s, e), documents: r.documents.slice(s, e), metadatas: r.metadatas.slice(s, e) });
      }
    }),
  );
}

async function chunkFiles(storeDir: string, snapshotId: string): Promise<string[]> {
  const manifest = await readManifest(store(storeDir), snapshotId);
  const files: string[] = [];
  for (const c of manifest.collections) for (const ref of c.chunks) files.push(join(storeDir, ...(STORAGE_PREFIX + chunkKey(ref.hash)).split("/")));
  return files;
}

async function run(job: Job): Promise<unknown> {
  switch (job.mode) {
    case "read-tune": {
      const trials: { pageSize: number; concurrency: number; byIds: boolean; ms: number; records: number }[] = [];
      // One untimed pass first, so the first trial does not pay for a cold server.
      await rawRead(job.url, [job.collection], job.pageSizes[job.pageSizes.length - 1]!, 1, false);
      for (const byIds of [false, true]) {
        for (const concurrency of job.concurrencies) {
          for (const pageSize of job.pageSizes) {
            const r = await rawRead(job.url, [job.collection], pageSize, concurrency, byIds);
            trials.push({ pageSize, concurrency, byIds, ms: r.ms, records: r.records });
          }
        }
      }
      return { trials };
    }
    case "raw-read": {
      const rss = new RssSampler();
      const r = await rawRead(job.url, job.collections, job.pageSize, job.concurrency, job.byIds);
      return { ...r, ...rss.stop() };
    }
    case "baselines":
      return baselines(job.url, job.collections, job.pageSize);
    case "backup": {
      const chroma = new ChromaRest({ url: job.url });
      const storage = store(job.storeDir);
      const rss = new RssSampler();
      const t0 = performance.now();
      const manifest = await takeSnapshot(chroma, storage, { ...job.options, collections: job.collections });
      const ms = performance.now() - t0;
      return {
        ms,
        ...rss.stop(),
        id: manifest.id,
        records: manifest.records,
        bytes: manifest.bytes,
        newBytes: manifest.newBytes,
        chunks: manifest.collections.reduce((n, c) => n + c.chunks.length, 0),
        chunksWithDrops: manifest.collections.reduce((n, c) => n + c.chunks.filter((ch) => ch.drop?.length).length, 0),
        warnings: manifest.warnings,
        sections: await chunkSections(job.storeDir, manifest.collections.flatMap((c) => c.chunks.map((ch) => ch.hash))),
      };
    }
    case "restore": {
      const chroma = new ChromaRest({ url: job.url });
      const storage = store(job.storeDir);
      const manifest = await readManifest(storage, job.snapshotId);
      const rss = new RssSampler();
      const t0 = performance.now();
      const restored = await restoreSnapshot(chroma, storage, manifest, { ...job.options, rename: job.rename });
      const ms = performance.now() - t0;
      return { ms, ...rss.stop(), records: restored.reduce((n, c) => n + c.records, 0), collections: restored };
    }
    case "write-tune": {
      // Adds in flight first (at the first batch size, small enough that several
      // batches overlap), then the other batch sizes at the best of those.
      const client = await clientFor(job.url);
      const [first] = clientRecords(job.dataset);
      const limit = Math.min(job.trialRecords, first!.ids.length);
      const trials: { batchSize: number; concurrency: number; ms: number; records: number }[] = [];
      let k = 0;
      const trial = async (batchSize: number, concurrency: number) => {
        const t0 = performance.now();
        await clientWrite(client, `${job.namePrefix}-${k++}`, first!, limit, batchSize, concurrency);
        trials.push({ batchSize, concurrency, ms: performance.now() - t0, records: limit });
      };
      const [sweepBatch, ...otherBatches] = job.batchSizes;
      for (const concurrency of job.concurrencies) await trial(sweepBatch!, concurrency);
      const bestConcurrency = trials.reduce((a, b) => (b.ms < a.ms ? b : a)).concurrency;
      for (const batchSize of otherBatches) await trial(batchSize, bestConcurrency);
      return { trials };
    }
    case "raw-write": {
      const client = await clientFor(job.url);
      const records = clientRecords(job.dataset);
      await client.heartbeat(); // connection and preflight out of the timing
      await client.getMaxBatchSize();
      const rss = new RssSampler();
      const t0 = performance.now();
      for (const r of records) await clientWrite(client, `${job.namePrefix}-${r.spec.name}`, r, r.ids.length, job.batchSize, job.concurrency);
      const ms = performance.now() - t0;
      return { ms, ...rss.stop(), records: records.reduce((n, r) => n + r.ids.length, 0) };
    }
    case "verify": {
      const storage = store(job.storeDir);
      const manifest = await readManifest(storage, job.snapshotId);
      const t0 = performance.now();
      const report = await verifySnapshot(storage, manifest);
      return { ms: performance.now() - t0, ok: report.ok, chunks: report.chunks, bytes: report.bytes, records: report.records };
    }
    case "raw-hash": {
      const files = await chunkFiles(job.storeDir, job.snapshotId);
      const t0 = performance.now();
      let bytes = 0;
      for (const file of files) {
        const data = await readFile(file);
        createHash("sha256").update(data).digest("hex");
        bytes += data.byteLength;
      }
      return { ms: performance.now() - t0, bytes, chunks: files.length };
    }
  }
}

const job = JSON.parse(process.argv[2] ?? "null") as Job | null;
if (!job) {
  console.error("usage: node dist/bench/worker-<hash>.mjs '<json job>' (bench/run.ts builds it; from source: node --import tsx bench/worker.ts '<json job>')");
  process.exit(2);
}
run(job).then(
  (result) => {
    process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(result)}\n`);
  },
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
