/**
 * Hostile data in the store (docs/FORMAT.md): chunks and manifests that pass the cheap
 * checks (magic, sha256 name, manifest checksum) but lie about what they hold.
 *
 * - A deflate bomb (about 1 MB that inflates to 1 GiB) inside a chunk whose header and
 *   manifest claim a few bytes: verify and restore answer snapshot_corrupt quickly, with
 *   RSS bounded (numbers in RELIABILITY.md).
 * - Manifests re-serialized with a valid checksum but pointing at the wrong chunks, or with
 *   counts that do not add up: caught by the decode-time checks, the manifest's own
 *   consistency checks or the restore count check, never written into Chroma as if fine.
 *   The one swap no keyless check can catch (refs swapped consistently between collections
 *   of equal size) is refused with SNAPSHOT_SIGNING_KEY, and pinned as the limit without it.
 * - A manifest whose checksum does not match: 422 on GET, left out of the list.
 */
import { inflateRawSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { SnapshotCorruptError } from "../../lib/errors.js";
import { readManifest } from "../../lib/snapshot/catalog.js";
import { chunkKey, decodeChunk, encodeChunk, sha256Hex } from "../../lib/snapshot/chunk.js";
import { inflateStepsTaken } from "../../lib/snapshot/codec.js";
import { manifestKey, newSnapshotId, parseManifest, serializeManifest, type Manifest } from "../../lib/snapshot/manifest.js";
import { ManifestKeys, signingKeyId } from "../../lib/snapshot/signing.js";
import { readAll } from "../../lib/storage/streams.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, dumpCollection, makeRecords } from "../fixtures/dataset.js";
import { parseDump } from "../snapshot/compare.js";
import { client, expectError, makeApp, makeService, makeStore, ndjsonLines, resetChroma, type Client, type Store } from "../handlers/harness.js";
import { JsonColumn } from "../../lib/json/json-column.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const ALPHA = { name: "alpha", count: 60, dim: 8, seed: 21 };
const BETA = { name: "beta", count: 40, dim: 16, seed: 22 };
// Same record count and dimension: the swap the current format cannot detect.
const GAMMA = { name: "gamma", count: 50, dim: 8, seed: 23 };
const DELTA = { name: "delta", count: 50, dim: 8, seed: 24 };

let chroma: TestChroma;
let rest: ChromaRest;
let store: Store;
let api: Client;
/** A real snapshot of all four collections, and a second one where alpha has two chunks. */
let base: Manifest;
let twoChunk: Manifest;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
  await resetChroma(chroma.url, [ALPHA, BETA, GAMMA, DELTA]);
  store = await makeStore("memory");
  api = client(makeApp(makeService({ chromaUrl: chroma.url, storage: store.storage, chromaTimeoutMs: 10_000 })));
  const first = await api.post("/backups", { tag: "base" });
  expect(first.status, first.text).toBe(201);
  base = await readManifest(store.storage, first.body.id);
  // Ten more records in alpha and one changed: the next snapshot reuses the first chunk
  // (dropping the changed record's old version) and adds one with the eleven.
  const alphaId = await collectionId(chroma.url, "alpha");
  await addRecords(chroma.url, alphaId, makeRecords(10, ALPHA.dim, 99, "alpha-extra"));
  await addRecords(chroma.url, alphaId, [{ ...makeRecords(1, ALPHA.dim, 7, "alpha")[0]!, documentJson: '"changed"' }], "upsert");
  const second = await api.post("/backups", { tag: "two-chunk" });
  expect(second.status, second.text).toBe(201);
  twoChunk = await readManifest(store.storage, second.body.id);
  const alpha = twoChunk.collections.find((c) => c.name === "alpha")!;
  expect(alpha.chunks.map((r) => [r.records, r.drop?.length ?? 0])).toEqual([
    [60, 1],
    [11, 0],
  ]);
}, 120_000);

afterAll(async () => {
  await store?.cleanup();
  await chroma?.close();
});

// ---------------------------------------------------------------------------------------
// helpers

/** Chroma's collections as name -> record count (what a rejected restore must leave alone). */
async function chromaState(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const c of await rest.listCollections()) out[c.name] = await rest.count(c.id);
  return out;
}

/** Every key of the store with a digest of its bytes. */
async function storeState(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const info of store.storage.list("")) out[info.key] = await sha256Hex(await readAll(await store.storage.get(info.key)));
  return out;
}

let forged = 0;
/**
 * A copy of `from`, edited, re-serialized with a valid checksum (serializeManifest) and
 * stored under a fresh snapshot id, as a writer with store access (or a buggy writer) could.
 */
async function forge(from: Manifest, edit: (m: Manifest) => void): Promise<string> {
  const m = structuredClone(from);
  // Ids sort by time: the forgeries are dated after every real snapshot, seconds apart.
  const at = new Date(Date.parse(twoChunk.createdAt) + 1000 * ++forged);
  m.id = newSnapshotId(at);
  m.createdAt = at.toISOString();
  m.tag = "forged";
  edit(m);
  await store.storage.put(manifestKey(m.id), await serializeManifest(m));
  return m.id;
}

const entry = (m: Manifest, name: string) => m.collections.find((c) => c.name === name)!;

/** gamma's and delta's chunk refs swapped, totals consistent: what no keyless check can see. */
function swapGammaDelta(m: Manifest): void {
  const [g, d] = [entry(m, "gamma"), entry(m, "delta")];
  [g.chunks, d.chunks] = [d.chunks, g.chunks];
  fixTotals(m);
}

/** Recomputes the totals a consistent writer would have written. */
function fixTotals(m: Manifest): void {
  for (const c of m.collections) {
    c.records = c.chunks.reduce((n, r) => n + r.records - (r.drop?.length ?? 0), 0);
    c.bytes = c.chunks.reduce((n, r) => n + r.bytes, 0);
  }
  m.records = m.collections.reduce((n, c) => n + c.records, 0);
  m.bytes = m.collections.reduce((n, c) => n + c.bytes, 0);
}

/**
 * Restores `from` of snapshot `id` under a new name and expects a 422 snapshot_corrupt,
 * in JSON and in NDJSON, in replace and merge mode, with Chroma left exactly as it was.
 */
async function expectRestoreRejected(id: string, from: string, mentions?: RegExp): Promise<void> {
  const before = await chromaState();
  const target = `${from}-forged`;
  for (const mode of ["replace", "merge"] as const) {
    const body = { snapshot: id, collections: [from], rename: { [from]: target }, mode };
    const r = await api.post("/restore", body);
    expectError(r, 422, "snapshot_corrupt", mentions);
    expect(r.body.error.details.collection).toBe(from);
    const streamed = ndjsonLines(await api.post("/restore", body, { headers: { accept: "application/x-ndjson" } }));
    expect(streamed.at(-1)).toMatchObject({ event: "error", status: 422, error: { code: "snapshot_corrupt" } });
    expect(await chromaState(), `${mode}: Chroma unchanged`).toEqual(before);
  }
}

async function verifyErrors(id: string): Promise<{ ok: boolean; errors: { chunk: string; collection: string; message: string }[] }> {
  const r = await api.post(`/backups/${id}/verify`);
  expect(r.status, r.text).toBe(200);
  return r.body;
}

// ---------------------------------------------------------------------------------------
// the deflate bomb

/** LSB-first bit writer (RFC 1951 §3.1.1); Huffman codes go in most-significant bit first. */
class BitWriter {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}
  bits(value: number, n: number): void {
    for (let i = 0; i < n; i++, this.pos++) if ((value >>> i) & 1) this.bytes[this.pos >> 3]! |= 1 << (this.pos & 7);
  }
  code(code: number, length: number): void {
    for (let i = length - 1; i >= 0; i--, this.pos++) if ((code >>> i) & 1) this.bytes[this.pos >> 3]! |= 1 << (this.pos & 7);
  }
}

/**
 * A raw deflate stream that inflates to `1 + 258k >= outputBytes` zero bytes, built
 * directly rather than by compressing (deflating 1 GiB takes ~12 s). One dynamic-Huffman
 * block whose codes are: literal/length 285 (length 258) -> "0", literal 0 -> "10",
 * end-of-block -> "11"; distance code 0 (distance 1) -> "0". So: one literal zero, then k
 * copies of "258 bytes at distance 1" at 2 bits each (all zero bits), then end of block.
 * That is deflate's best ratio, about 1032:1: a 1 GiB bomb is about 1 MB; 1 KB -> 1 GB is
 * not possible in deflate.
 */
function deflateBomb(outputBytes: number): { stream: Uint8Array; inflatesTo: number } {
  const copies = Math.ceil((outputBytes - 1) / 258);
  const headerBits = 3 + 5 + 5 + 4 + 18 * 3 + 64;
  const w = new BitWriter(new Uint8Array(Math.ceil((headerBits + 2 + 2 * copies + 2) / 8) + 1));
  w.bits(1, 1); // BFINAL
  w.bits(2, 2); // BTYPE = dynamic Huffman
  w.bits(286 - 257, 5); // HLIT: literal/length codes 0..285
  w.bits(1 - 1, 5); // HDIST: one distance code
  w.bits(18 - 4, 4); // HCLEN: code-length codes in the RFC's order, up to "1"
  const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
  const clLength: Record<number, number> = { 18: 1, 1: 2, 2: 2 }; // canonical: 18 -> 0, 1 -> 10, 2 -> 11
  for (const sym of order.slice(0, 18)) w.bits(clLength[sym] ?? 0, 3);
  const len1 = () => w.code(0b10, 2);
  const len2 = () => w.code(0b11, 2);
  const zeros = (n: number) => {
    w.code(0b0, 1); // code-length symbol 18: repeat a zero length 11-138 times
    w.bits(n - 11, 7);
  };
  len2(); // literal 0
  zeros(138);
  zeros(117); // literals 1..255 unused
  len2(); // 256: end of block
  zeros(28); // lengths 257..284 unused
  len1(); // 285: length 258
  len1(); // distance code 0
  w.code(0b10, 2); // literal 0
  w.pos += 2 * copies; // k x (length 258 "0", distance 1 "0"): zero bits, already zero
  w.code(0b11, 2); // end of block
  return { stream: w.bytes.subarray(0, Math.ceil(w.pos / 8)), inflatesTo: 1 + 258 * copies };
}

/** A chunk with a valid magic and header that claims `claimedText` decoded bytes, holding `stream` as its deflated text. */
function bombChunk(stream: Uint8Array, records: number, claimedText: number): Uint8Array {
  const bytes = new Uint8Array(24 + stream.byteLength);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 0x31434243, true); // "CBC1"
  view.setUint32(4, records, true);
  view.setUint32(8, 0, true); // no embeddings
  view.setUint32(12, 1, true); // deflate
  view.setUint32(16, stream.byteLength, true);
  view.setUint32(20, claimedText, true);
  bytes.set(stream, 24);
  return bytes;
}

/** Stores the chunk under its real sha256 and a manifest (valid checksum) whose one collection references it. */
async function plantBomb(chunk: Uint8Array, records: number, claimedText: number, name = "bombed"): Promise<{ id: string; hash: string }> {
  const hash = await sha256Hex(chunk);
  await store.storage.put(chunkKey(hash), chunk);
  const id = await forge(base, (m) => {
    const template = entry(m, "alpha");
    m.collections = [{ ...template, name, id: "00000000-0000-0000-0000-000000000000", records, recordsAtStart: records, recordsAtEnd: records, chunks: [{ hash, records, bytes: chunk.byteLength, decodedBytes: 24 + claimedText }] }];
    fixTotals(m);
  });
  return { id, hash };
}

interface Cost {
  ms: number;
  /** RSS after minus RSS before. */
  rssGrowth: number;
  /** Peak RSS of the process after the attempt minus RSS before (an upper bound on the growth during it). */
  peakGrowth: number;
  /** Inflate input steps fed during the attempt (codec.ts inflateStepsTaken: this thread and the pool's). */
  steps: number;
}

async function measure(attempt: () => Promise<void>): Promise<Cost> {
  const rss0 = process.memoryUsage().rss;
  const peak0 = process.resourceUsage().maxRSS * 1024;
  const steps0 = inflateStepsTaken();
  const t0 = performance.now();
  await attempt();
  const ms = performance.now() - t0;
  const rss1 = process.memoryUsage().rss;
  const peak1 = process.resourceUsage().maxRSS * 1024;
  // maxRSS is the lifetime peak: if the attempt did not raise it, its own peak was no higher than before.
  return { ms, rssGrowth: rss1 - rss0, peakGrowth: peak1 > peak0 ? peak1 - rss0 : 0, steps: inflateStepsTaken() - steps0 };
}

const fmt = (c: Cost) => `${c.ms.toFixed(0)} ms, ${c.steps} inflate step(s), RSS +${(c.rssGrowth / MiB).toFixed(1)} MiB, peak +${(c.peakGrowth / MiB).toFixed(1)} MiB`;

describe("a deflate bomb inside a chunk with a valid name and header", () => {
  it("the hand-built bomb is a valid deflate stream of zeros (checked small with zlib)", () => {
    const { stream, inflatesTo } = deflateBomb(1 * MiB);
    const out = inflateRawSync(stream);
    expect(out.byteLength).toBe(inflatesTo);
    expect(out.every((b) => b === 0)).toBe(true);
    expect(inflatesTo / stream.byteLength).toBeGreaterThan(1000);
  });

  it("1 GiB from ~1 MB: verify and restore answer 422 snapshot_corrupt naming the chunk; time and RSS stay bounded", async () => {
    const { stream, inflatesTo } = deflateBomb(GiB);
    expect(inflatesTo).toBeGreaterThanOrEqual(GiB);
    // Deflate's ratio tops out near 1032:1.
    expect(stream.byteLength).toBeLessThan(1.05 * 1e6);
    const claimed = 4 + 4 + 4 + 1; // what "[]\n[]\n[]\nnull" would need for one record... any small number
    const chunk = bombChunk(stream, 1, claimed);
    const { id, hash } = await plantBomb(chunk, 1, claimed);
    const chromaBefore = await chromaState();

    // Straight through decodeChunk, the function that must stop.
    const direct = await measure(async () => {
      await expect(decodeChunk(chunk, { hash, records: 1, decodedBytes: 24 + claimed, collection: "bombed" })).rejects.toThrow(/inflates to more than/);
    });
    let verify!: Awaited<ReturnType<typeof verifyErrors>>;
    const viaVerify = await measure(async () => {
      verify = await verifyErrors(id);
    });
    expect(verify.ok).toBe(false);
    expect(verify.errors).toEqual([{ chunk: hash, collection: "bombed", message: expect.stringMatching(/inflates to more than the 13 bytes claimed/) }]);

    const viaRestore: Cost[] = [];
    for (const mode of ["replace", "merge"] as const) {
      viaRestore.push(
        await measure(async () => {
          const r = await api.post("/restore", { snapshot: id, mode, safetySnapshot: false });
          expectError(r, 422, "snapshot_corrupt", new RegExp(hash));
          expect(r.body.error.details).toEqual({ chunk: hash, collection: "bombed" });
        }),
      );
      // Nothing was created in Chroma: not in replace (built aside), not in merge (decoded before writing).
      expect(await chromaState(), mode).toEqual(chromaBefore);
    }
    console.info(
      `[format-attacks] deflate bomb: ${stream.byteLength} bytes compressed -> ${inflatesTo} bytes (${(inflatesTo / stream.byteLength).toFixed(0)}:1), chunk ${chunk.byteLength} bytes claiming ${claimed}; ` +
        `decodeChunk ${fmt(direct)}; verify ${fmt(viaVerify)}; restore replace ${fmt(viaRestore[0]!)}; restore merge ${fmt(viaRestore[1]!)}`,
    );
    for (const cost of [direct, viaVerify, ...viaRestore]) {
      expect(cost.rssGrowth).toBeLessThan(64 * MiB);
      expect(cost.peakGrowth).toBeLessThan(64 * MiB);
      // Inflation stops at the claim: the step that passes it is the last (a full pass over the
      // ~1 MB stream would feed 32 steps of 32 KiB or 64 of 16 KiB, and took ~5 s).
      expect(cost.steps).toBe(1);
    }
  }, 60_000);

  it("a chunk whose header claims more than the manifest is refused before inflating", async () => {
    const { stream } = deflateBomb(64 * MiB);
    // The header claims the full 64 MiB; the manifest (what restore trusts for sizes) says 13.
    const chunk = bombChunk(stream, 1, 64 * MiB + 1);
    const hash = await sha256Hex(chunk);
    const cost = await measure(async () => {
      await expect(decodeChunk(chunk, { hash, records: 1, decodedBytes: 24 + 13, collection: "x" })).rejects.toThrow(/decodes to \d+ bytes, the manifest says 37/);
    });
    expect(cost.steps, "refused before any inflating").toBe(0);
    expect(cost.rssGrowth).toBeLessThan(16 * MiB);
  });

  it("a stream that expands just past its claim, or stops short of it, is refused", async () => {
    const batch = { ids: ["a", "b"], dim: 0, embeddings: new Float32Array(0), documents: JsonColumn.fromValues(["x".repeat(500), null]), uris: [null, null], metadatas: ["null", "null"] };
    const good = await encodeChunk(batch);
    const view = new DataView(good.bytes.buffer);
    expect(view.getUint32(20, true)).toBe(1); // text deflated (chunk v2 header: docs/FORMAT.md)
    const textBytes = view.getUint32(28, true);
    const hash = await sha256Hex(good.bytes);
    expect((await decodeChunk(good.bytes, { hash, records: 2, decodedBytes: good.decodedBytes, collection: "x" })).ids).toEqual(["a", "b"]);
    for (const [claim, why] of [
      [textBytes - 1, /inflates to more than/],
      [textBytes + 1, /inflates to fewer than/],
    ] as const) {
      const lying = good.bytes.slice();
      new DataView(lying.buffer).setUint32(28, claim, true);
      await expect(decodeChunk(lying, { hash, records: 2, decodedBytes: 32 + claim, collection: "x" }), String(claim)).rejects.toThrow(why);
    }
    // A truncated stream is an error too, not a short read.
    const truncated = good.bytes.slice(0, good.bytes.byteLength - 3);
    new DataView(truncated.buffer).setUint32(24, view.getUint32(24, true) - 3, true);
    await expect(decodeChunk(truncated, { hash, records: 2, decodedBytes: good.decodedBytes, collection: "x" })).rejects.toThrow(SnapshotCorruptError);
  });
});

// ---------------------------------------------------------------------------------------
// manifests that point at the wrong chunks

describe("a manifest re-serialized with a valid checksum but the wrong chunk references", () => {
  it("a chunk ref whose record count, decoded size, stored size or hash was edited: the decode-time checks catch it", async () => {
    const cases: [string, (m: Manifest) => void, RegExp][] = [
      ["records", (m) => void (entry(m, "alpha").chunks[0]!.records -= 1), /holds \d+ records, the manifest says/],
      ["decodedBytes", (m) => void (entry(m, "alpha").chunks[0]!.decodedBytes += 7), /decodes to \d+ bytes, the manifest says/],
      ["bytes", (m) => void (entry(m, "alpha").chunks[0]!.bytes -= 1), /larger than the \d+ bytes the manifest records/],
      ["hash -> beta's chunk", (m) => void (entry(m, "alpha").chunks[0]!.hash = entry(m, "beta").chunks[0]!.hash), /bytes, the manifest records|larger than/],
      ["hash -> a chunk not in the store", (m) => void (entry(m, "alpha").chunks[0]!.hash = "0".repeat(64)), /missing from the store/],
    ];
    for (const [what, edit, why] of cases) {
      const id = await forge(base, (m) => {
        edit(m);
        fixTotals(m);
      });
      const report = await verifyErrors(id);
      expect(report.ok, what).toBe(false);
      expect(report.errors, what).toEqual([{ chunk: expect.stringMatching(/^[0-9a-f]{64}$/), collection: "alpha", message: expect.stringMatching(why) }]);
      await expectRestoreRejected(id, "alpha", why);
    }
  });

  it("collection totals that do not add up to their chunks: the manifest itself is corrupt (422 on GET, left out of the list)", async () => {
    const cases: [string, (m: Manifest) => void, RegExp][] = [
      // Whole chunk lists swapped between alpha (60 records, dim 8) and beta (40, dim 16), totals left.
      [
        "chunk lists swapped between collections",
        (m) => {
          const [a, b] = [entry(m, "alpha"), entry(m, "beta")];
          [a.chunks, b.chunks] = [b.chunks, a.chunks];
        },
        /collection alpha: its chunks hold 40 records, it says 60/,
      ],
      // Snapshot two's alpha (70 records in two chunks) pointed at snapshot one's single chunk.
      ["chunk list from an older snapshot", (m) => void (entry(m, "alpha").chunks = structuredClone(entry(base, "alpha").chunks)), /collection alpha: its chunks hold 60 records, it says 70/],
      ["collection record count", (m) => void (entry(m, "alpha").records += 1), /collection alpha: its chunks hold 70 records, it says 71/],
      ["collection bytes", (m) => void (entry(m, "beta").bytes += 1), /collection beta: its chunks hold \d+ bytes, it says/],
      ["snapshot record total", (m) => void (m.records -= 1), /its collections hold \d+ records, it says/],
      ["drop index past the chunk", (m) => void (entry(m, "alpha").chunks[0]!.drop = [60]), /drops a record it does not have/],
      [
        "one chunk listed twice (totals re-added)",
        (m) => {
          const a = entry(m, "alpha");
          a.chunks = [a.chunks[0]!, a.chunks[0]!];
          fixTotals(m);
        },
        /collection alpha: chunk [0-9a-f]{64} is listed twice/,
      ],
      ["snapshot byte total", (m) => void (m.bytes += 5), /its collections hold \d+ bytes, it says/],
      ["metadataJson that is not JSON", (m) => void (entry(m, "alpha").metadataJson = 'null,"name":"other"'), /metadataJson is not JSON/],
      ["configurationJson that is not JSON", (m) => void (entry(m, "alpha").configurationJson = "{"), /configurationJson is not JSON/],
    ];
    for (const [what, edit, why] of cases) {
      const from = what === "chunk list from an older snapshot" || what === "collection record count" ? twoChunk : base;
      const id = await forge(from, edit);
      await expect(parseManifest(await readAll(await store.storage.get(manifestKey(id))), id), what).rejects.toThrow(why);
      expectError(await api.get(`/backups/${id}`), 422, "snapshot_corrupt", why);
      expectError(await api.post(`/backups/${id}/verify`), 422, "snapshot_corrupt", why);
      expect((await api.get("/backups")).body.snapshots.map((s: { id: string }) => s.id), what).not.toContain(id);
      const before = await chromaState();
      expectError(await api.post("/restore", { snapshot: id, collections: ["alpha"], rename: { alpha: "alpha-forged" } }), 422, "snapshot_corrupt", why);
      expect(await chromaState(), what).toEqual(before);
      const damaged = (await api.get("/status")).body.storage.damagedSnapshots as { id: string; error: string }[];
      expect(damaged.find((d) => d.id === id)?.error, what).toMatch(why);
      await store.storage.delete(manifestKey(id));
    }
  });

  it("chunk lists swapped between collections of different dimension, totals re-added: the dimension check catches it", async () => {
    const id = await forge(base, (m) => {
      const [a, b] = [entry(m, "alpha"), entry(m, "beta")];
      [a.chunks, b.chunks] = [b.chunks, a.chunks];
      fixTotals(m);
    });
    const report = await verifyErrors(id);
    expect(report.ok).toBe(false);
    expect(report.errors.map((e) => e.collection).sort()).toEqual(["alpha", "beta"]);
    for (const e of report.errors) expect(e.message).toMatch(/embeddings of \d+ floats, the collection has \d+/);
    await expectRestoreRejected(id, "alpha", /embeddings of 16 floats, the collection has 8/);
    await expectRestoreRejected(id, "beta", /embeddings of 8 floats, the collection has 16/);
  });

  it("a drop entry removed (totals re-added): two versions of one record; the restore count check catches it in replace mode", async () => {
    // Snapshot two's alpha: chunk 0 (60 records, the old version of one record dropped) and
    // chunk 1 (11, with its new version). Without the drop both versions are live: 71 claimed.
    const id = await forge(twoChunk, (m) => {
      delete entry(m, "alpha").chunks[0]!.drop;
      fixTotals(m);
    });
    // Every chunk on its own is fine: verify cannot see it.
    expect((await verifyErrors(id)).ok).toBe(true);
    const before = await chromaState();
    const r = await api.post("/restore", { snapshot: id, collections: ["alpha"], rename: { alpha: "alpha-forged" } });
    // Chroma ignores the second add of an id: 70 land, the aside copy is dropped, nothing is swapped in.
    expectError(r, 422, "snapshot_corrupt", /Chroma holds 70 records after the restore, the snapshot has 71/);
    expect(r.body.error.details).toEqual({ chunk: null, collection: "alpha" });
    expect(await chromaState()).toEqual(before);
  });

  it("WITHOUT A KEY (the remaining limit): whole chunk lists swapped between two collections of equal size and dimension restore the wrong records", async () => {
    // gamma and delta: 50 records of dim 8 each, one chunk each. With the refs (hash,
    // records, bytes, decodedBytes) and totals swapped together, every check passes: the
    // manifest's checksum is an integrity check any writer can recompute, and chunks are
    // content-addressed and shared, so nothing in a chunk says which collection it belongs to.
    // Only a keyed signature (SNAPSHOT_SIGNING_KEY, next test) detects it; this service has none.
    const id = await forge(base, swapGammaDelta);
    expect((await verifyErrors(id)).ok).toBe(true);
    const r = await api.post("/restore", { snapshot: id, collections: ["gamma"], rename: { gamma: "gamma-forged" } });
    expect(r.status, r.text).toBe(200);
    const restored = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "gamma-forged")));
    expect([...restored.keys()].every((k) => k.startsWith("delta-"))).toBe(true);
    await rest.deleteCollection("gamma-forged");
  });

  it("WITH SNAPSHOT_SIGNING_KEY: the same swap, re-checksummed unsigned, with the genuine signature kept or signed with another key, is refused by verify and restore", async () => {
    const KEY = "format-attacks-signing-key-0123456789abcdef";
    const keyed = client(makeApp(makeService({ chromaUrl: chroma.url, storage: store.storage, chromaTimeoutMs: 10_000, signingKeys: [KEY] })));
    const taken = await keyed.post("/backups", { collections: ["gamma", "delta"], tag: "signed" });
    expect(taken.status, taken.text).toBe(201);
    const signedId: string = taken.body.id;
    const stored = new TextDecoder().decode(await readAll(await store.storage.get(manifestKey(signedId))));
    const signature = /,"signature":"(hmac-sha256:([0-9a-f]{8}):[0-9a-f]{64})"/.exec(stored);
    expect(signature?.[2]).toBe(signingKeyId(KEY));
    expect((await verifyErrors(signedId)).ok).toBe(true);

    // The forger swaps the chunk refs consistently under a newer id and recomputes the
    // checksum (as above), then: leaves it unsigned; keeps the genuine signature; signs it
    // with a key of its own.
    const m = await readManifest(store.storage, signedId, new ManifestKeys([KEY]));
    const at = new Date(Date.parse(m.createdAt) + 1000);
    m.id = newSnapshotId(at);
    m.createdAt = at.toISOString();
    swapGammaDelta(m);
    const id = m.id;
    const unsigned = new TextDecoder().decode(await serializeManifest(m));
    const variants: [string, string, RegExp][] = [
      ["unsigned", unsigned, /not signed; it was taken before SNAPSHOT_SIGNING_KEY was set or the signature was stripped/],
      ["genuine signature kept", unsigned.replace('","manifest":', `","signature":"${signature![1]}","manifest":`), /signature mismatch: the manifest was altered/],
      ["signed with another key", new TextDecoder().decode(await serializeManifest(m, new ManifestKeys(["the-forgers-own-key-0123456789abcdef0123"]))), new RegExp(`signed with key [0-9a-f]{8}, this service has ${signingKeyId(KEY)}`)],
    ];
    const chromaBefore = await chromaState();
    for (const [what, text, why] of variants) {
      await store.storage.put(manifestKey(id), new TextEncoder().encode(text));
      // A service without the key is fooled (it cannot check a signature).
      expect((await verifyErrors(id)).ok, what).toBe(true);
      expectError(await keyed.post(`/backups/${id}/verify`), 422, "snapshot_corrupt", why);
      expectError(await keyed.get(`/backups/${id}`), 422, "snapshot_corrupt", why);
      expect((await keyed.get("/backups")).body.snapshots.map((s: { id: string }) => s.id), what).not.toContain(id);
      expect((await keyed.get("/backups/latest")).body.id, `${what}: latest skips it`).toBe(signedId);
      for (const mode of ["replace", "merge"] as const) {
        expectError(await keyed.post("/restore", { snapshot: id, collections: ["gamma"], rename: { gamma: "gamma-forged" }, mode }), 422, "snapshot_corrupt", why);
        expect(await chromaState(), `${what}, ${mode}: nothing written to Chroma`).toEqual(chromaBefore);
      }
      const damaged = (await keyed.get("/status")).body.storage.damagedSnapshots as { id: string; error: string }[];
      expect(damaged.find((d) => d.id === id)?.error, what).toMatch(why);
    }
    await store.storage.delete(manifestKey(id));

    // The genuine one restores gamma's own records.
    const r = await keyed.post("/restore", { snapshot: signedId, collections: ["gamma"], rename: { gamma: "gamma-signed" } });
    expect(r.status, r.text).toBe(200);
    const restored = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "gamma-signed")));
    expect(restored.size).toBe(GAMMA.count);
    expect([...restored.keys()].every((k) => k.startsWith("gamma-"))).toBe(true);
    await rest.deleteCollection("gamma-signed");
    await store.storage.delete(manifestKey(signedId));
  });
});

describe("a manifest whose checksum does not match", () => {
  it("one changed byte in the body: parseManifest throws SnapshotCorruptError, GET 422, the list and latest leave it out, delete still works", async () => {
    const stateBefore = await storeState();
    const id = await forge(base, () => {});
    const good = await readAll(await store.storage.get(manifestKey(id)));
    const text = new TextDecoder().decode(good);
    const altered = text.replace(`"records":${base.records}`, `"records":${base.records + 1}`);
    expect(altered).not.toBe(text);
    const bad = new TextEncoder().encode(altered);
    await store.storage.put(manifestKey(id), bad);

    await expect(parseManifest(bad, id)).rejects.toBeInstanceOf(SnapshotCorruptError);
    await expect(parseManifest(bad, id)).rejects.toThrow(/checksum mismatch/);
    expectError(await api.get(`/backups/${id}`), 422, "snapshot_corrupt", /checksum mismatch/);
    expectError(await api.post(`/backups/${id}/verify`), 422, "snapshot_corrupt", /checksum mismatch/);
    const listed = (await api.get("/backups")).body.snapshots.map((s: { id: string }) => s.id);
    expect(listed).not.toContain(id);
    expect(listed).toContain(base.id);
    // It is the newest by id, yet latest skips it.
    expect((await api.get("/backups/latest")).body.id).not.toBe(id);
    const before = await chromaState();
    expectError(await api.post("/restore", { snapshot: id, collections: ["alpha"], rename: { alpha: "alpha-forged" } }), 422, "snapshot_corrupt", /checksum/);
    expect(await chromaState()).toEqual(before);

    // The same body under another snapshot's name, a truncated file, an empty file, not UTF-8.
    const other = newSnapshotId(new Date(Date.parse(twoChunk.createdAt) + 1000 * ++forged));
    for (const [bytes, why] of [
      [good, /describes snapshot/],
      [good.subarray(0, good.byteLength - 10), /not a manifest|checksum/],
      [new Uint8Array(0), /not a manifest/],
      [new Uint8Array([0xff, 0xfe, 0x00]), /not UTF-8/],
    ] as const) {
      await store.storage.put(manifestKey(other), bytes);
      expectError(await api.get(`/backups/${other}`), 422, "snapshot_corrupt", why);
    }
    expect((await api.del(`/backups/${other}`)).status).toBe(200);
    expect((await api.del(`/backups/${id}`)).status).toBe(200);
    expect(await storeState()).toEqual(stateBefore);
  });
});
