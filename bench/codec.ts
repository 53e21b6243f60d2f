/**
 * `npx tsx bench/codec.ts`: node:zlib against fflate on one section of the bench's text and
 * one high-byte plane, 20 rounds each: the figures lib/snapshot/codec.ts cites.
 */
import { deflateRaw, inflateRawSync, constants } from "node:zlib";
import { promisify } from "node:util";
import { deflateSync, inflateSync } from "fflate";
import { collectionSpecs, generateCollections, loadCorpus } from "./dataset.js";
import { inflateSection, inflateStreaming } from "../lib/snapshot/codec.js";

const corpus = loadCorpus(3000);
const specs = collectionSpecs("m");
const [c] = generateCollections({ specs: specs.slice(0, 1), counts: [3000], dim: 16, seed: 1, corpus });
const text = new TextEncoder().encode(JSON.stringify(c!.ids) + "\n" + JSON.stringify(c!.documents) + "\nnull\n" + c!.metadatas.join("\n"));
const floats = c!.embeddings;
const high = new Uint8Array(floats.length); const w = new Uint32Array(floats.buffer); for (let i = 0; i < w.length; i++) high[i] = w[i]! >>> 24;
console.log(`corpus: ${corpus.origin}; text ${text.byteLength} bytes, high plane ${high.byteLength}`);
const dz = promisify(deflateRaw) as (b: Uint8Array, o: object) => Promise<Uint8Array>;
const R = 20;
async function time(name: string, f: () => Promise<unknown> | unknown) {
  await f();
  const t = performance.now();
  let out: unknown;
  for (let i = 0; i < R; i++) out = await f();
  const ms = (performance.now() - t) / R;
  console.log(`${name}: ${ms.toFixed(1)} ms/round${out instanceof Uint8Array ? `, ${out.byteLength} bytes` : ""}`);
}
const zText = await dz(text, { level: 2, memLevel: 9 });
await time("deflate text L2 node:zlib async", () => dz(text, { level: 2, memLevel: 9, chunkSize: 256 * 1024 }));
await time("deflate text L2 fflate deflateSync", () => deflateSync(text, { level: 2 }));
await time("deflate high plane node:zlib huffman-only", () => dz(high, { strategy: constants.Z_HUFFMAN_ONLY }));
await time("deflate high plane fflate level 1", () => deflateSync(high, { level: 1 }));
await time("inflate text node:zlib inflateRawSync", () => inflateRawSync(zText));
await time("inflate text inflateSection (Node: node:zlib with maxOutputLength)", () => inflateSection(zText, text.byteLength));
await time("inflate text fflate inflateSync (one shot)", () => inflateSync(zText));
await time("inflate text inflateStreaming (the Worker's: fflate Inflate, 8 KiB steps)", () => inflateStreaming(zText, text.byteLength));
