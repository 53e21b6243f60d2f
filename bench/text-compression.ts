/**
 * Where the snapshot's text bytes go: re-compresses the text section of every chunk of a
 * snapshot in a store (as left by `npm run bench -- --keep`) in other ways, to tell the
 * compressor's share from the chunking's share.
 *
 *   npx tsx bench/text-compression.ts <store dir> [snapshot id]
 *
 * Prints, for the same decoded text: as stored (fflate, the engine's level); node:zlib
 * raw deflate at levels 6 and 9 per chunk (with the time each takes); per chunk with each
 * column (ids, documents, metadata) in its own stream; and per collection, the chunks'
 * columns joined (ids, then documents, then metadata), which is what the
 * float32PlusGzTextBytes yardstick compresses. The snapshot defaults to the oldest one.
 */
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { deflateSync, inflateSync } from "fflate";
import { readCatalog } from "../lib/snapshot/catalog.js";
import { chunkKey } from "../lib/snapshot/chunk.js";
import { fsStorage } from "../lib/storage/fs.js";
import { withPrefix } from "../lib/storage/prefixed.js";
import { readAll } from "../lib/storage/streams.js";
import { STORAGE_PREFIX } from "./jobs.js";

const [dir, wanted] = process.argv.slice(2);
if (!dir) {
  console.error("usage: npx tsx bench/text-compression.ts <store dir> [snapshot id]");
  process.exit(2);
}
const storage = withPrefix(fsStorage(dir), STORAGE_PREFIX);
const { snapshots } = await readCatalog(storage);
const manifest = wanted ? snapshots.find((m) => m.id === wanted) : snapshots[snapshots.length - 1];
if (!manifest) throw new Error(`no snapshot ${wanted ?? ""} in ${dir}`);

const timed = <T>(fn: () => T): [T, number] => {
  const t0 = performance.now();
  const out = fn();
  return [out, performance.now() - t0];
};
const sizes = { decoded: 0, stored: 0, zlib6: 0, zlib9: 0, fflate6: 0, columns6: 0, columns9: 0, perCollection6: 0, perCollection9: 0 };
const ms = { zlib6: 0, zlib9: 0, fflate6: 0, fflateInflate: 0, zlibInflate: 0 };
let chunks = 0;
for (const collection of manifest.collections) {
  const ids: unknown[] = [];
  const documents: unknown[] = [];
  const metadatas: string[] = [];
  for (const ref of collection.chunks) {
    const bytes = await readAll(await storage.get(chunkKey(ref.hash)));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = view.getUint32(4, true);
    const dim = view.getUint32(8, true);
    const codec = view.getUint32(12, true);
    const storedBytes = view.getUint32(16, true);
    const textBytes = view.getUint32(20, true);
    const storedText = bytes.subarray(24 + n * dim * 4);
    const [text, inflateMs] = timed(() => (codec === 1 ? inflateSync(storedText, { out: new Uint8Array(textBytes) }) : storedText));
    chunks++;
    sizes.decoded += textBytes;
    sizes.stored += storedBytes;
    ms.fflateInflate += inflateMs;
    const [z6, z6ms] = timed(() => deflateRawSync(text));
    const [z9, z9ms] = timed(() => deflateRawSync(text, { level: 9 }));
    const [f6, f6ms] = timed(() => deflateSync(text, { level: 6 }));
    ms.zlibInflate += timed(() => inflateRawSync(z6))[1];
    sizes.zlib6 += z6.byteLength;
    sizes.zlib9 += z9.byteLength;
    sizes.fflate6 += f6.byteLength;
    ms.zlib6 += z6ms;
    ms.zlib9 += z9ms;
    ms.fflate6 += f6ms;
    const lines = Buffer.from(text).toString("utf8").split("\n");
    const columns = [lines[0]!, lines[1]!, lines.slice(3).join("\n")];
    sizes.columns6 += columns.reduce((s, c) => s + deflateRawSync(c).byteLength, 0);
    sizes.columns9 += columns.reduce((s, c) => s + deflateRawSync(c, { level: 9 }).byteLength, 0);
    ids.push(...(JSON.parse(lines[0]!) as unknown[]));
    documents.push(...(JSON.parse(lines[1]!) as unknown[]));
    metadatas.push(...lines.slice(3));
  }
  const joined = `${JSON.stringify(ids)}\n${JSON.stringify(documents)}\n[${metadatas.join(",")}]`;
  sizes.perCollection6 += deflateRawSync(joined).byteLength;
  sizes.perCollection9 += deflateRawSync(joined, { level: 9 }).byteLength;
}

const row = (label: string, bytes: number, time?: number) =>
  console.log(`${label.padEnd(58)} ${bytes.toLocaleString("en-US").padStart(12)} B ${((100 * bytes) / sizes.stored).toFixed(1).padStart(6)}%${time === undefined ? "" : `  ${time.toFixed(0).padStart(5)} ms`}`);
console.log(`snapshot ${manifest.id}: ${manifest.records} records, ${chunks} chunks, ${manifest.bytes.toLocaleString("en-US")} B; text sections:`);
row("decoded", sizes.decoded);
row("as stored (fflate, the engine's level)", sizes.stored, ms.fflateInflate);
row("fflate deflateSync level 6, per chunk", sizes.fflate6, ms.fflate6);
row("node:zlib deflateRaw level 6, per chunk", sizes.zlib6, ms.zlib6);
row("node:zlib deflateRaw level 9, per chunk", sizes.zlib9, ms.zlib9);
row("node:zlib level 6, per chunk, one stream per column", sizes.columns6);
row("node:zlib level 9, per chunk, one stream per column", sizes.columns9);
row("node:zlib level 6, per collection (the yardstick's layout)", sizes.perCollection6);
row("node:zlib level 9, per collection", sizes.perCollection9);
console.log(`inflate of every text section: fflate ${ms.fflateInflate.toFixed(0)} ms (the stored bytes), node:zlib ${ms.zlibInflate.toFixed(0)} ms (the level-6 bytes)`);
