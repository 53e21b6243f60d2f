/**
 * `npx tsx bench/codec.ts`: the section codec on one text section of the bench's text
 * (3,000 records, ~1.9 MB) and one high-byte plane: the figures lib/snapshot/codec.ts and
 * codec-pool.ts cite. Each line gives the fastest and the median of ROUNDS rounds (the
 * machine is shared: the fastest is the codec, the median the neighbours).
 */
import { constants, deflateRaw, inflateRawSync } from "node:zlib";
import { promisify } from "node:util";
import { deflate, Deflate, deflateSync, Inflate, inflateSync } from "fflate";
import { collectionSpecs, generateCollections, loadCorpus } from "./dataset.js";
import { createCodecPool } from "../lib/snapshot/codec-pool.js";
import { INFLATE_STEP, inflateSection, THREAD_INFLATE_STEP } from "../lib/snapshot/codec.js";

const ROUNDS = 20;
const corpus = loadCorpus(3000);
const [c] = generateCollections({ specs: collectionSpecs("m").slice(0, 1), counts: [3000], dim: 16, seed: 1, corpus });
const text = new TextEncoder().encode(JSON.stringify(c!.ids) + "\n" + JSON.stringify(c!.documents) + "\nnull\n" + c!.metadatas.join("\n"));
const floats = c!.embeddings;
const high = new Uint8Array(floats.length);
const w = new Uint32Array(floats.buffer);
for (let i = 0; i < w.length; i++) high[i] = w[i]! >>> 24;
console.log(`corpus: ${corpus.origin}; text ${text.byteLength} bytes, high plane ${high.byteLength}`);

async function time(name: string, f: () => Promise<unknown> | unknown): Promise<void> {
  let out = await f();
  const ms: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t = performance.now();
    out = await f();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  console.log(`${name}: ${ms[0]!.toFixed(1)} ms fastest, ${ms[ROUNDS >> 1]!.toFixed(1)} median${out instanceof Uint8Array ? `, ${out.byteLength} bytes` : ""}`);
}

const zlibDeflate = promisify(deflateRaw) as (b: Uint8Array, o: object) => Promise<Uint8Array>;
const fflateAsync = (b: Uint8Array) => new Promise<Uint8Array>((resolve, reject) => deflate(b, { level: 2 }, (err, out) => (err ? reject(err) : resolve(out))));
function fflateStreaming(bytes: Uint8Array, piece: number): Uint8Array {
  const parts: Uint8Array[] = [];
  const deflater = new Deflate({ level: 2 }, (part) => parts.push(part));
  for (let at = 0; at < bytes.byteLength; at += piece) deflater.push(bytes.subarray(at, at + piece), at + piece >= bytes.byteLength);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.byteLength), 0);
  return out;
}
function inflateInSteps(stored: Uint8Array, size: number, step: number): Uint8Array {
  const out = new Uint8Array(size);
  let written = 0;
  const inflater = new Inflate((piece) => (out.set(piece, written), (written += piece.byteLength)));
  for (let at = 0; at < stored.byteLength; at += step) inflater.push(stored.subarray(at, at + step), at + step >= stored.byteLength);
  return out;
}

console.log("-- deflate, text, level 2");
await time("node:zlib deflateRaw (thread pool; before issue 14)", () => zlibDeflate(text, { level: 2, memLevel: 9, chunkSize: 256 * 1024 }));
await time("fflate deflateSync (main thread)", () => deflateSync(text, { level: 2 }));
await time("fflate Deflate streaming, 64 KiB pieces", () => fflateStreaming(text, 64 * 1024));
await time("fflate Deflate streaming, 16 KiB pieces", () => fflateStreaming(text, 16 * 1024));
await time("fflate deflate() async (a Worker per call)", () => fflateAsync(text));
const pool = createCodecPool(2)!;
await time("codec pool deflate (fflate deflateSync on a thread)", () => pool.deflate(text, 2));
let blocked = 0;
await time("codec pool deflate, 4 at once (per round)", async () => {
  const t = performance.now();
  const calls = [0, 1, 2, 3].map(() => pool.deflate(text, 2));
  blocked = performance.now() - t;
  return (await Promise.all(calls))[0];
});
console.log(`  main thread busy handing 4 sections to the pool: ${blocked.toFixed(2)} ms (the copy and postMessage)`);
console.log("-- deflate, high-byte plane");
await time("node:zlib Huffman only (before issue 14)", () => zlibDeflate(high, { strategy: constants.Z_HUFFMAN_ONLY }));
await time("fflate deflateSync level 1", () => deflateSync(high, { level: 1 }));
await time("codec pool deflate level 1", () => pool.deflate(high, 1));

const stored = deflateSync(text, { level: 2 });
console.log(`-- inflate, text (${stored.byteLength} bytes stored)`);
await time("node:zlib inflateRawSync (before issue 14)", () => inflateRawSync(stored));
await time("fflate inflateSync, one shot", () => inflateSync(stored, { out: new Uint8Array(text.byteLength) }));
for (const step of [8, 16, 32, 64]) await time(`fflate Inflate, ${step} KiB steps`, () => inflateInSteps(stored, text.byteLength, step * 1024));
await time(`inflateSection (${INFLATE_STEP / 1024} KiB steps, counted, bomb-safe)`, () => inflateSection(stored, text.byteLength));
await time(`codec pool inflate (${THREAD_INFLATE_STEP / 1024} KiB steps on a thread, hand-over included)`, () => pool.inflate(stored, text.byteLength, THREAD_INFLATE_STEP));
await time("codec pool inflate, 4 at once (per round)", async () => (await Promise.all([0, 1, 2, 3].map(() => pool.inflate(stored, text.byteLength, THREAD_INFLATE_STEP))))[0]);

// An image's chunks (lib/images): ~16 KiB each, one inflate per chunk, at most one step of input.
const pieces: [Uint8Array, number][] = [];
for (let at = 0; at < text.byteLength; at += 16 * 1024) pieces.push([deflateSync(text.subarray(at, at + 16 * 1024), { level: 2 }), Math.min(16 * 1024, text.byteLength - at)]);
console.log(`-- inflate, the text as ${pieces.length} chunks of 16 KiB (an image's chunks)`);
await time("fflate Inflate streaming, one push a chunk (before)", () => pieces.forEach(([s, n]) => inflateInSteps(s, n, 1 << 30)));
await time("inflateSection: one shot into claim + 1 bytes (input of one step)", () => pieces.forEach(([s, n]) => inflateSection(s, n)));
await pool.close();
