import { describe, expect, it } from "vitest";
import { cdcChunks, IMAGE_CDC_SIZES, type CdcSizes } from "../../lib/images/cdc.js";
import { sha256Hex } from "../../lib/snapshot/chunk.js";
import { mulberry32 } from "../fixtures/dataset.js";

function randomBytes(n: number, seed: number): Uint8Array {
  const rand = mulberry32(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

async function* pieces(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.byteLength; at += size) yield bytes.subarray(at, Math.min(at + size, bytes.byteLength));
}

async function cut(bytes: Uint8Array, readSize = 100_000, sizes: CdcSizes = IMAGE_CDC_SIZES): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of cdcChunks(pieces(bytes, readSize), sizes)) out.push(c);
  return out;
}

const join = (chunks: Uint8Array[]) => Buffer.concat(chunks);

describe("content-defined chunking", () => {
  const data = randomBytes(3 * 1024 * 1024, 7);

  it("gives back every byte in order, each chunk within the sizes, cut the same whatever the read size", async () => {
    const a = await cut(data, 1000);
    const b = await cut(data, 1 << 20);
    expect(join(a).equals(Buffer.from(data))).toBe(true);
    expect(a.map((c) => c.byteLength)).toEqual(b.map((c) => c.byteLength));
    for (const c of a.slice(0, -1)) {
      expect(c.byteLength).toBeGreaterThanOrEqual(IMAGE_CDC_SIZES.minBytes);
      expect(c.byteLength).toBeLessThanOrEqual(IMAGE_CDC_SIZES.maxBytes);
    }
    // Normalized chunking keeps the average near the target on random data.
    const mean = data.byteLength / a.length;
    expect(mean).toBeGreaterThan(IMAGE_CDC_SIZES.avgBytes * 0.6);
    expect(mean).toBeLessThan(IMAGE_CDC_SIZES.avgBytes * 1.6);
  });

  it("an insertion changes only the chunks around it", async () => {
    const inserted = Buffer.concat([data.subarray(0, 1_500_000), Buffer.from("a few inserted bytes"), data.subarray(1_500_000)]);
    const before = new Set((await cut(data)).map(sha256Hex));
    const after = (await cut(inserted)).map(sha256Hex);
    const fresh = after.filter((h) => !before.has(h));
    expect(fresh.length).toBeGreaterThan(0);
    expect(fresh.length).toBeLessThanOrEqual(3);
  });

  it("cuts a file of zeros (no boundary in the content) at the maximum size", async () => {
    const zeros = new Uint8Array(5 * IMAGE_CDC_SIZES.maxBytes + 10);
    expect((await cut(zeros)).map((c) => c.byteLength)).toEqual([...Array(5).fill(IMAGE_CDC_SIZES.maxBytes), 10]);
  });

  it("handles empty and tiny inputs, and refuses sizes that are not min < avg < max with avg a power of two", async () => {
    expect(await cut(new Uint8Array(0))).toEqual([]);
    expect((await cut(new Uint8Array([1, 2, 3]))).map((c) => c.byteLength)).toEqual([3]);
    await expect(cut(data, 1000, { minBytes: 10, avgBytes: 3000, maxBytes: 9000 })).rejects.toThrow(RangeError);
  });
});
