/**
 * What a new restore image uploads after 1% of the records changed (issue 16's target:
 * bytes uploaded / image size <= 0.30), and how the chunk size plays in it.
 *
 *   npx tsx bench/image-dedup.ts [records=20000] [changed percent=1] [--sizes]
 *
 * A real Chroma is seeded with the bench's data (384 floats, three collections), stopped
 * and imaged (uploadImage into an fs store); then, each from a copy of that directory,
 * 1% of the records are upserted with new text and embeddings, or 1% are added, and the
 * result is imaged into the same store. With --sizes, the same files are also cut with
 * other CDC sizes and compressed offline (no store), the new stored bytes counted the same way.
 */
import { cp, mkdtemp, rm } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedChroma } from "../lib/chroma/embedded.js";
import { cdcChunks, type CdcSizes } from "../lib/images/cdc.js";
import { downloadImage, uploadImage } from "../lib/images/store.js";
import { listDataFiles } from "../lib/images/upload.js";
import type { ImageManifest } from "../lib/images/types.js";
import { sha256Hex } from "../lib/snapshot/chunk.js";
import { deflateSection } from "../lib/snapshot/codec.js";
import { fsStorage } from "../lib/storage/fs.js";
import { collectionSpecs, generateCollections, loadCorpus, mulberry32, rest, seedCollection, splitCounts, type GeneratedCollection } from "./dataset.js";

const records = Number(process.argv[2] ?? 20000);
const percent = Number(process.argv[3] ?? 1);
const compareSizes = process.argv.includes("--sizes");
const dim = 384;
const work = await mkdtemp(join(tmpdir(), "image-dedup-"));
const log = (...parts: unknown[]) => console.log(...parts);
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

try {
  const specs = collectionSpecs("img");
  const corpus = loadCorpus(records * 1.03);
  const seeded = generateCollections({ specs, counts: splitCounts(records, specs), dim, seed: 42, corpus });
  const base = join(work, "v0");
  await withChroma(base, async (url) => {
    for (const c of seeded) await seedCollection(url, c);
  });
  log(`seeded ${records} records x ${dim} floats`);

  const changes = Math.round((records * percent) / 100);
  const pool = generateCollections({ specs, counts: splitCounts(changes, specs), dim, seed: 43, corpus, corpusOffset: records });
  const upserted = join(work, "v1-upsert");
  await cp(base, upserted, { recursive: true });
  await withChroma(upserted, async (url) => {
    const rand = mulberry32(44);
    for (const [i, c] of seeded.entries()) {
      // The pool's records under ids picked at random from the collection: new text and embedding.
      const fresh = pool[i]!;
      const ids = fresh.ids.map(() => c.ids[Math.floor(rand() * c.ids.length)]!);
      const unique = [...new Set(ids)];
      await seedCollectionOp(url, c.spec.name, { ...fresh, ids: unique, documents: fresh.documents.slice(0, unique.length), metadatas: fresh.metadatas.slice(0, unique.length) }, "upsert");
    }
  });
  const added = join(work, "v2-add");
  await cp(base, added, { recursive: true });
  await withChroma(added, async (url) => {
    for (const fresh of pool) await seedCollectionOp(url, fresh.spec.name, fresh, "add");
  });
  log(`changed ${changes} records (upsert) / added ${changes} records, each from a copy of the first directory`);

  // The real thing, through the store, with the sizes the service uses.
  const storage = fsStorage(join(work, "store"));
  const meta = (snapshot: string) => ({ snapshot, chromaVersion: "bench", collections: [] });
  let t = performance.now();
  const first = await uploadImage(storage, base, meta("20261201T000000Z-0001"));
  const uploadMs = performance.now() - t;
  t = performance.now();
  await downloadImage(storage, first.manifest, join(work, "downloaded"));
  const downloadMs = performance.now() - t;
  const afterUpsert = await uploadImage(storage, upserted, meta("20261202T000000Z-0002"));
  const afterAdd = await uploadImage(storage, added, meta("20261203T000000Z-0003"));
  const ratio = (r: { uploadedBytes: number; manifest: ImageManifest }) => (r.uploadedBytes / r.manifest.storedBytes).toFixed(3);
  log(`image: ${mb(first.manifest.bytes)} of files, ${mb(first.manifest.storedBytes)} stored, ${first.manifest.files.reduce((n, f) => n + f.chunks.length, 0)} chunks; upload ${Math.round(uploadMs)} ms, download ${Math.round(downloadMs)} ms (fs store)`);
  for (const f of first.manifest.files) log(`  ${f.path}: ${mb(f.size)}`);
  log(`${percent}% upserted: uploaded ${mb(afterUpsert.uploadedBytes)} of ${mb(afterUpsert.manifest.storedBytes)} stored = ${ratio(afterUpsert)}`);
  log(`${percent}% added:    uploaded ${mb(afterAdd.uploadedBytes)} of ${mb(afterAdd.manifest.storedBytes)} stored = ${ratio(afterAdd)}`);

  // Other sizes, offline: per file, the stored bytes of chunks the first image lacks.
  const sizes: CdcSizes[] = !compareSizes ? [] : [
    { minBytes: 1024, avgBytes: 4096, maxBytes: 16384 },
    { minBytes: 2048, avgBytes: 8192, maxBytes: 32768 },
    { minBytes: 4096, avgBytes: 16384, maxBytes: 65536 },
    { minBytes: 16384, avgBytes: 65536, maxBytes: 262144 },
  ];
  for (const s of sizes) {
    const v0 = await cutDir(base, s);
    for (const [name, dir] of [
      ["upsert", upserted],
      ["add", added],
    ] as const) {
      const v = await cutDir(dir, s);
      const known = new Set([...v0.values()].flatMap((chunks) => chunks.map((c) => c.hash)));
      let stored = 0;
      let fresh = 0;
      const perFile: string[] = [];
      for (const [path, chunks] of v) {
        const total = chunks.reduce((n, c) => n + c.bytes, 0);
        const novel = chunks.filter((c) => !known.has(c.hash)).reduce((n, c) => n + c.bytes, 0);
        stored += total;
        fresh += novel;
        perFile.push(`${path.replace(/^[0-9a-f-]{36}\//, "hnsw/")} ${(novel / Math.max(total, 1)).toFixed(2)}`);
      }
      log(`avg ${s.avgBytes / 1024} KiB, ${percent}% ${name}: ${(fresh / stored).toFixed(3)} (${mb(fresh)} of ${mb(stored)}; chunks ${[...v.values()].reduce((n, c) => n + c.length, 0)}) [${perFile.join(", ")}]`);
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

async function withChroma(dataDir: string, fn: (url: string) => Promise<void>): Promise<void> {
  const chroma = await startEmbeddedChroma({ dataDir });
  try {
    await fn(chroma.url);
  } finally {
    await chroma.stop();
  }
}

async function seedCollectionOp(url: string, name: string, c: GeneratedCollection, op: "add" | "upsert"): Promise<void> {
  const { id } = (await rest(url, "GET", `/collections/${name}`)) as { id: string };
  if (op === "add") {
    await seedCollection(url, c, 5000, id);
    return;
  }
  const embeddings = c.ids.map((_, i) => `"${Buffer.from(c.embeddings.buffer, c.embeddings.byteOffset + i * c.dim * 4, c.dim * 4).toString("base64")}"`);
  await rest(url, "POST", `/collections/${id}/upsert`, `{"ids":${JSON.stringify(c.ids)},"embeddings":[${embeddings.join(",")}],"documents":${JSON.stringify(c.documents)},"metadatas":[${c.metadatas.join(",")}]}`);
}

/** Each file's chunks (sha256 of the stored bytes and their size), cut with `sizes`. */
async function cutDir(dir: string, sizes: CdcSizes): Promise<Map<string, { hash: string; bytes: number }[]>> {
  const out = new Map<string, { hash: string; bytes: number }[]>();
  for (const f of await listDataFiles(dir)) {
    const chunks: { hash: string; bytes: number }[] = [];
    for await (const piece of cdcChunks(createReadStream(f.absolute, { highWaterMark: 256 * 1024 }), sizes)) {
      const stored = await deflateSection(piece, { level: 1 });
      chunks.push({ hash: sha256Hex(stored), bytes: stored.byteLength });
    }
    out.set(f.path, chunks);
  }
  return out;
}
