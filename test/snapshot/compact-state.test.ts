import fc from "fast-check";
import { expect, it } from "vitest";
import { memoryStorage } from "../../lib/storage/memory.js";
import { digestsKey, encodeDigests, sha256Hex } from "../../lib/snapshot/chunk.js";
import { DigestIndex } from "../../lib/snapshot/digest-index.js";
import type { ChunkRef, CollectionEntry } from "../../lib/snapshot/manifest.js";
import { PreviousIndex } from "../../lib/snapshot/previous-index.js";
import { SeenIds } from "../../lib/snapshot/seen-ids.js";

/**
 * Keys from a small pool, so that adds repeat; every key shares its first four bytes
 * (the table's hash) with others, so lookups probe past slots of other keys and must
 * compare all 16 bytes.
 */
const key = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => b.map((x) => x % 3))).map(([head, tail]) => {
  const k = new Uint8Array(16);
  k.fill(head, 0, 4);
  k.set(tail, 4);
  return k;
});
const hex = (k: Uint8Array) => Buffer.from(k).toString("hex");

it("DigestIndex answers as a Map of the keys to their insertion numbers, through growth and colliding hashes", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.boolean(), key), { maxLength: 600 }), fc.nat(40), (ops, expected) => {
      const index = new DigestIndex(expected);
      const oracle = new Map<string, number>();
      for (const [isAdd, k] of ops) {
        // Keys arrive as one record among others in a page of digests.
        const page = new Uint8Array(48);
        page.set(k, 16);
        if (isAdd) {
          const known = oracle.get(hex(k));
          if (known === undefined) oracle.set(hex(k), oracle.size);
          expect(index.add(page, 1)).toEqual({ number: oracle.get(hex(k)), added: known === undefined });
        } else {
          expect(index.find(page, 1)).toBe(oracle.get(hex(k)) ?? -1);
        }
        expect(index.size).toBe(oracle.size);
      }
    }),
    { numRuns: 300 },
  );
});

it("DigestIndex holds at most 28 bytes per key when sized for them, at most 36 when grown", () => {
  const n = 100_000;
  const digests = new Uint8Array(n * 16);
  for (let i = 0; i < digests.length; i++) digests[i] = (Math.imul(i + 1, 2654435761) >>> 13) & 0xff;
  const sized = new DigestIndex(n);
  const grown = new DigestIndex();
  for (let i = 0; i < n; i++) {
    sized.add(digests, i);
    grown.add(digests, i);
  }
  expect(sized.byteLength / n).toBeLessThanOrEqual(28);
  expect(grown.byteLength / n).toBeLessThanOrEqual(36);
});

it("SeenIds answers as a Set of the ids", () => {
  const id = fc.oneof(fc.string({ maxLength: 3 }), fc.string({ unit: "grapheme", maxLength: 8 }), fc.constantFrom("a", "b", "\u{1F600}", "\uD800", ""));
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.boolean(), id), { maxLength: 300 }), (ops) => {
      const seen = new SeenIds();
      const oracle = new Set<string>();
      for (const [isAdd, s] of ops) {
        if (isAdd) {
          expect(seen.add(s)).toBe(!oracle.has(s));
          oracle.add(s);
        } else {
          expect(seen.has(s)).toBe(oracle.has(s));
        }
        expect(seen.size).toBe(oracle.size);
      }
    }),
    { numRuns: 300 },
  );
});

/** The previous snapshot's index as it was written with a Map (the oracle): which refs are kept, with which drops. */
function keptByMap(refs: { ref: ChunkRef; digests: Uint8Array | null }[], claimed: Uint8Array[]): ChunkRef[] {
  const byDigest = new Map<string, { ref: number; index: number }>();
  const kept = refs.map(() => null as Uint8Array | null);
  refs.forEach(({ ref, digests }, r) => {
    const drop = new Set(ref.drop ?? []);
    if (ref.records - drop.size < ref.records * 0.5 || !digests) return;
    kept[r] = new Uint8Array(ref.records);
    for (let i = 0; i < ref.records; i++) {
      const k = hex(digests.subarray(i * 16, i * 16 + 16));
      if (!drop.has(i) && !byDigest.has(k)) byDigest.set(k, { ref: r, index: i });
    }
  });
  for (const d of claimed) {
    const hit = byDigest.get(hex(d));
    if (hit) kept[hit.ref]![hit.index] = 1;
  }
  const out: ChunkRef[] = [];
  refs.forEach(({ ref }, r) => {
    if (!kept[r]) return;
    const drop: number[] = [];
    for (let i = 0; i < ref.records; i++) if (!kept[r][i]) drop.push(i);
    if (drop.length === ref.records) return;
    const { hash, records, bytes, decodedBytes, digests } = ref;
    out.push({ hash, records, bytes, decodedBytes, ...(digests ? { digests } : {}), ...(drop.length > 0 ? { drop } : {}) });
  });
  return out;
}

it("PreviousIndex keeps the same chunks with the same drops as a Map of the digests did", async () => {
  const chunk = fc.record({
    keys: fc.array(key, { minLength: 1, maxLength: 12 }),
    dropped: fc.array(fc.nat(11), { maxLength: 8 }),
    sidecar: fc.constantFrom("bound", "unbound", "missing"),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(chunk, { maxLength: 6 }), fc.array(key, { maxLength: 40 }), async (chunks, reads) => {
      const storage = memoryStorage();
      const refs: { ref: ChunkRef; digests: Uint8Array | null }[] = [];
      for (const [c, spec] of chunks.entries()) {
        const digests = new Uint8Array(spec.keys.length * 16);
        spec.keys.forEach((k, i) => digests.set(k, i * 16));
        const hash = sha256Hex(new Uint8Array([c, ...digests]));
        const sidecar = encodeDigests(digests);
        if (spec.sidecar !== "missing") await storage.put(digestsKey(hash), sidecar);
        const drop = [...new Set(spec.dropped.filter((i) => i < spec.keys.length))].sort((a, b) => a - b);
        const ref: ChunkRef = { hash, records: spec.keys.length, bytes: 100 + c, decodedBytes: 200 + c, ...(spec.sidecar === "bound" ? { digests: sha256Hex(sidecar) } : {}), ...(drop.length ? { drop } : {}) };
        refs.push({ ref, digests: spec.sidecar === "missing" ? null : digests });
      }
      const entry = { chunks: refs.map((r) => r.ref) } as CollectionEntry;
      const index = await PreviousIndex.load(storage, entry, false);
      const page = new Uint8Array(reads.length * 16);
      reads.forEach((k, i) => page.set(k, i * 16));
      const oracle = new Set(refs.flatMap(({ ref, digests }) => (digests && ref.records - (ref.drop?.length ?? 0) >= ref.records * 0.5 ? Array.from({ length: ref.records }, (_, i) => i).filter((i) => !ref.drop?.includes(i)).map((i) => hex(digests.subarray(i * 16, i * 16 + 16))) : [])));
      reads.forEach((k, i) => expect(index.claim(page, i)).toBe(oracle.has(hex(k))));
      expect(index.keptRefs()).toEqual(keptByMap(refs, reads));
      // Signed manifests trust bound sidecars only.
      const signed = await PreviousIndex.load(storage, entry, true);
      reads.forEach((_, i) => signed.claim(page, i));
      expect(signed.keptRefs()).toEqual(keptByMap(refs.map((r) => (r.ref.digests ? r : { ...r, digests: null })), reads));
    }),
    { numRuns: 150 },
  );
});
