/**
 * `npx tsx bench/verify-floor.ts STORE_DIR`: the least work a verify of the newest snapshot
 * in STORE_DIR (a store kept by `npm run bench -- --keep`: <work dir>/stores/full-0) does
 * here, part by part, each the fastest of ROUNDS rounds in this one warm process:
 * - reading the chunk files and their sha256 (the bench's rawHashMs, its denominator);
 * - inflating every compressed section with node:zlib (the codec before issue 14), with
 *   fflate's one-shot inflateSync (the fastest fflate inflates), and with inflateSection
 *   (what the engine runs: one shot up to one step of input, bomb-safe steps beyond);
 *   and verify's own loop (6 chunks in flight) with the sections on the codec pool alone,
 *   and with the calling thread helping when the pool is backlogged (helpWhenBusy).
 * Then the bound it implies for verify / raw sha256 on this machine's cores, whatever the
 * scheduling: (read + sha256 + inflate) / cores, over read + sha256.
 */
import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { inflateRawSync } from "node:zlib";
import { inflateSync } from "fflate";
import { readManifest, listSnapshotIds } from "../lib/snapshot/catalog.js";
import { chunkKey } from "../lib/snapshot/chunk.js";
import { CODEC_STORED, corruptFor, readLayout } from "../lib/snapshot/chunk-layout.js";
import { inflateSection, inflateSectionAsync } from "../lib/snapshot/codec.js";
import { forEachLimited } from "../lib/concurrency.js";
import { fsStorage } from "../lib/storage/fs.js";
import { withPrefix } from "../lib/storage/prefixed.js";
import { readAll } from "../lib/storage/streams.js";

const ROUNDS = 5;
const dir = process.argv[2];
if (!dir) throw new Error("usage: npx tsx bench/verify-floor.ts STORE_DIR (a store kept by npm run bench -- --keep: <work dir>/stores/full-0)");
const storage = withPrefix(fsStorage(dir), "chromadb/");
const ids = await listSnapshotIds(storage);
if (ids.length === 0) throw new Error(`no snapshot in ${dir}`);
const manifest = await readManifest(storage, ids[ids.length - 1]!);
const refs = manifest.collections.flatMap((c) => c.chunks.map((ref) => ({ ref, c })));

const fastest = async (f: () => unknown): Promise<number> => {
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    await f();
    best = Math.min(best, performance.now() - t);
  }
  return best;
};

const chunks: Uint8Array[] = [];
const readAndHash = await fastest(async () => {
  chunks.length = 0;
  for (const { ref } of refs) {
    const bytes = await readAll(await storage.get(chunkKey(ref.hash)));
    createHash("sha256").update(bytes).digest("hex");
    chunks.push(bytes);
  }
});
const hashOnly = await fastest(() => chunks.forEach((b) => createHash("sha256").update(b).digest("hex")));
type Section = { stored: Uint8Array; size: number };
const sectionsOf = (bytes: Uint8Array, { ref, c }: (typeof refs)[number]): Section[] => {
  const expect = { hash: ref.hash, records: ref.records, decodedBytes: ref.decodedBytes, collection: c.name, dimension: c.dimension };
  const layout = readLayout(bytes, expect, corruptFor(expect));
  const values = layout.n * layout.dim;
  const found: Section[] = [];
  if (layout.embeddingCodec !== CODEC_STORED) found.push({ stored: layout.embeddings.subarray(values * 3), size: values });
  if (layout.textCodec !== CODEC_STORED) found.push({ stored: layout.text, size: layout.textBytes });
  return found;
};
const sections = refs.flatMap((r, i) => sectionsOf(chunks[i]!, r));
const zlib = await fastest(() => sections.forEach((s) => inflateRawSync(s.stored, { maxOutputLength: s.size + 1 })));
const oneShot = await fastest(() => sections.forEach((s) => inflateSync(s.stored, { out: new Uint8Array(s.size + 1) })));
const engine = await fastest(() => sections.forEach((s) => inflateSection(s.stored, s.size)));

// Verify's own loop (verify.ts, checkChunk): 6 chunks in flight, each read, hashed and
// both its sections inflated, on the codec pool alone or with the calling thread helping
// when the pool is backlogged (helpWhenBusy, what checkChunk asks).
const asVerify = (helpWhenBusy: boolean) =>
  fastest(() =>
    forEachLimited(refs, 6, async (r) => {
      const bytes = await readAll(await storage.get(chunkKey(r.ref.hash)));
      createHash("sha256").update(bytes).digest("hex");
      await Promise.all(sectionsOf(bytes, r).map((s) => inflateSectionAsync(s.stored, s.size, { helpWhenBusy })));
    }),
  );
const poolOnly = await asVerify(false);
const helped = await asVerify(true);

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
const ms = (n: number) => `${n.toFixed(0)} ms`;
const cores = availableParallelism();
console.log(`snapshot ${manifest.id}: ${refs.length} chunks, ${mb(chunks.reduce((n, b) => n + b.byteLength, 0))}; ${sections.length} compressed sections, ${mb(sections.reduce((n, s) => n + s.stored.byteLength, 0))} -> ${mb(sections.reduce((n, s) => n + s.size, 0))}`);
console.log(`read + sha256 ${ms(readAndHash)} (sha256 alone ${ms(hashOnly)})`);
console.log(`inflate every section: node:zlib ${ms(zlib)}, fflate one shot ${ms(oneShot)}, inflateSection (the engine) ${ms(engine)}`);
console.log(`verify's loop (6 chunks in flight, read, sha256, inflate): sections on the codec pool ${ms(poolOnly)}, the calling thread helping when it is backlogged (helpWhenBusy) ${ms(helped)}`);
for (const [name, inflate] of [
  ["node:zlib", zlib],
  ["fflate one shot", oneShot],
  ["the engine", engine],
] as const) {
  const bound = (readAndHash + inflate) / cores;
  console.log(`verify / raw sha256 with ${name}, on ${cores} cores, at best: ${(bound / readAndHash).toFixed(2)} ((${ms(readAndHash)} + ${ms(inflate)}) / ${cores} over ${ms(readAndHash)})`);
}
