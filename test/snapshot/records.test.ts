import { createHash } from "node:crypto";
import fc from "fast-check";
import { expect, it } from "vitest";
import { JsonColumn, scanStringColumn } from "../../lib/json/json-column.js";
import { concatBatches, filterBatch, recordDigests, sliceBatch, type RecordBatch } from "../../lib/snapshot/records.js";

/** The records as plain arrays, the reference the batches are checked against. */
interface Plain {
  ids: string[];
  dim: number;
  /** Each record's embedding as float32 bit patterns (NaNs included). */
  bits: number[][];
  documents: (string | null)[];
  uris: (string | null)[];
  metadatas: string[];
}

const special = fc.constantFrom('"', "\\", "/", "\n", "\u0000", "\u001f", "é", "€", "😀", "\u2028", "\ud800", "\udfff");
const text = fc.oneof(fc.string({ unit: "binary", maxLength: 12 }), fc.string({ unit: fc.oneof(special, fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 })), maxLength: 12 }));
const metadata = fc.oneof(
  fc.constant("null"),
  fc.dictionary(fc.string({ unit: "grapheme", maxLength: 6 }), fc.oneof(fc.string({ unit: "grapheme", maxLength: 8 }), fc.integer(), fc.boolean()), { maxKeys: 4 }).map((o) => JSON.stringify(o)),
  fc.constantFrom('{"f":2.0}', '{"e":1e3,"k":"\\u00e9"}'),
  // Not JSON, but the formula takes any text (a lone surrogate becomes U+FFFD in UTF-8).
  text,
);

const plainBatch = (maxRecords = 8, dims: fc.Arbitrary<number> = fc.integer({ min: 0, max: 8 })): fc.Arbitrary<Plain> =>
  dims.chain((dim) =>
    fc.array(
      fc.record({
        id: text,
        bits: fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: dim, maxLength: dim }),
        document: fc.option(text, { nil: null }),
        uri: fc.option(text, { nil: null }),
        metadata,
      }),
      { maxLength: maxRecords },
    ).map((records) => ({
      ids: records.map((r) => r.id),
      dim,
      bits: records.map((r) => r.bits),
      documents: records.map((r) => r.document),
      uris: records.map((r) => r.uri),
      metadatas: records.map((r) => r.metadata),
    })),
  );

/** Float32 embeddings with exactly these bits, at a nonzero byte offset in a bigger buffer. */
function embeddingsOf(plain: Plain, pad: number): Float32Array {
  const words = new Uint32Array(pad + plain.ids.length * plain.dim + 3).fill(0xdeadbeef);
  words.set(plain.bits.flat(), pad);
  return new Float32Array(words.buffer, pad * 4, plain.ids.length * plain.dim);
}

function toBatch(plain: Plain, pad = 1): RecordBatch {
  return {
    ids: plain.ids,
    dim: plain.dim,
    embeddings: embeddingsOf(plain, pad),
    documents: JsonColumn.fromValues(plain.documents),
    uris: plain.uris,
    metadatas: plain.metadatas,
  };
}

/** The digest formula, computed from the plain values with a Hash object. */
function expectedDigests(plain: Plain): Uint8Array {
  const out = new Uint8Array(plain.ids.length * 16);
  plain.ids.forEach((id, i) => {
    const hash = createHash("sha256");
    hash.update(Buffer.from(`${JSON.stringify([id, plain.documents[i], plain.uris[i]])}\n${plain.metadatas[i]}\n`, "utf8"));
    hash.update(Buffer.from(Uint32Array.from(plain.bits[i]!).buffer));
    out.set(hash.digest().subarray(0, 16), i * 16);
  });
  return out;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
const bitsOf = (batch: RecordBatch) => Array.from(new Uint32Array(batch.embeddings.buffer, batch.embeddings.byteOffset, batch.embeddings.length));

function expectBatch(batch: RecordBatch, plain: Plain): void {
  expect(batch.dim).toBe(plain.dim);
  expect(batch.ids).toEqual(plain.ids);
  expect(batch.embeddings.length).toBe(plain.ids.length * plain.dim);
  expect(bitsOf(batch)).toEqual(plain.bits.flat());
  expect(batch.documents.length).toBe(plain.ids.length);
  expect(batch.documents.values()).toEqual(plain.documents);
  expect(batch.uris).toEqual(plain.uris);
  expect(batch.metadatas).toEqual(plain.metadatas);
}

const slicePlain = (p: Plain, start: number, end: number): Plain => ({
  ids: p.ids.slice(start, end),
  dim: p.dim,
  bits: p.bits.slice(start, end),
  documents: p.documents.slice(start, end),
  uris: p.uris.slice(start, end),
  metadatas: p.metadatas.slice(start, end),
});

it("recordDigests is sha256(JSON.stringify([id, document, uri]) + \\n + metadata + \\n, then the float32 bytes), cut to 16 bytes", () => {
  fc.assert(
    fc.property(plainBatch(), fc.nat({ max: 5 }), (plain, pad) => {
      const digests = recordDigests(toBatch(plain, pad));
      expect(digests.byteLength).toBe(plain.ids.length * 16);
      expect(hex(digests)).toBe(hex(expectedDigests(plain)));
    }),
    { numRuns: 300 },
  );
});

it("recordDigests matches the formula for documents scanned at an offset in a bigger buffer and sliced", () => {
  fc.assert(
    fc.property(plainBatch(10), fc.nat(), fc.nat(), fc.boolean(), (plain, a, b, asBuffer) => {
      const prefix = `{"ids":${JSON.stringify(plain.ids)},"documents":`;
      const utf8 = new TextEncoder().encode(`${prefix}${JSON.stringify(plain.documents)},"uris":${JSON.stringify(plain.uris)}}`);
      const bytes = asBuffer ? Buffer.from(utf8) : utf8;
      const scanned = scanStringColumn(bytes, Buffer.byteLength(prefix));
      expect(scanned).not.toBeNull();
      const n = plain.ids.length;
      const start = a % (n + 1);
      const end = start + (b % (n - start + 1));
      const documents = scanned!.column.slice(start, end);
      if (end > start && (start > 0 || end < n)) expect(documents.bytes.byteOffset).toBeGreaterThan(0);
      const sliced = slicePlain(plain, start, end);
      const batch: RecordBatch = { ...toBatch(sliced, 3), documents };
      expect(hex(recordDigests(batch))).toBe(hex(expectedDigests(sliced)));
      // And the same records as part of the whole batch give the same digests.
      const whole = recordDigests({ ...toBatch(plain), documents: scanned!.column });
      expect(hex(whole.subarray(start * 16, end * 16))).toBe(hex(expectedDigests(sliced)));
    }),
    { numRuns: 200 },
  );
});

it("recordDigests handles records larger than its scratch buffer, before and after small ones", () => {
  // Three UTF-8 bytes per UTF-16 code unit: 90 KB of metadata from 30,000 code units.
  const wide = "€".repeat(30_000);
  const big = "é".repeat(50_000) + "😀".repeat(20_000);
  const plain: Plain = {
    ids: ["small", "big-meta", "big-uri", "big-doc", "small-again"],
    dim: 4,
    bits: [
      [1, 2, 3, 4],
      [5, 6, 7, 8],
      [9, 10, 11, 12],
      [0x7fc00001, 0xffffffff, 0, 0x80000000],
      [13, 14, 15, 16],
    ],
    documents: ["a", null, "c", big, "b"],
    uris: [null, "u", wide + big, "v", null],
    metadatas: ["null", JSON.stringify({ k: wide }), "{}", "{}", '{"x":1}'],
  };
  expect(hex(recordDigests(toBatch(plain)))).toBe(hex(expectedDigests(plain)));
  for (let i = 0; i < plain.ids.length; i++) {
    const one = slicePlain(plain, i, i + 1);
    expect(hex(recordDigests(toBatch(one)))).toBe(hex(expectedDigests(one)));
  }
});

it("recordDigests tells apart records that differ in any one field", () => {
  const base: Plain = { ids: ["a"], dim: 2, bits: [[1, 2]], documents: ["d"], uris: [null], metadatas: ["null"] };
  const variants: Plain[] = [
    base,
    { ...base, ids: ["b"] },
    { ...base, documents: [null] },
    { ...base, documents: ["null"] },
    { ...base, uris: ["d"] },
    { ...base, uris: [""] },
    { ...base, metadatas: ["{}"] },
    { ...base, bits: [[1, 3]] },
    { ...base, dim: 0, bits: [[]] },
  ];
  const seen = new Set(variants.map((v) => hex(recordDigests(toBatch(v)))));
  expect(seen.size).toBe(variants.length);
});

it("sliceBatch keeps the columns aligned", () => {
  fc.assert(
    fc.property(plainBatch(10), fc.nat(), fc.nat(), (plain, a, b) => {
      const n = plain.ids.length;
      const start = a % (n + 1);
      const end = start + (b % (n - start + 1));
      const batch = toBatch(plain);
      const sliced = sliceBatch(batch, start, end);
      expectBatch(sliced, slicePlain(plain, start, end));
      expect(hex(recordDigests(sliced))).toBe(hex(recordDigests(batch).subarray(start * 16, end * 16)));
    }),
    { numRuns: 200 },
  );
});

it("filterBatch keeps the columns aligned", () => {
  fc.assert(
    fc.property(plainBatch(10), fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }), (plain, mask) => {
      const batch = toBatch(plain);
      const filtered = filterBatch(batch, (i) => mask[i]!);
      const kept = plain.ids.map((_, i) => i).filter((i) => mask[i]);
      const expected: Plain = {
        ids: kept.map((i) => plain.ids[i]!),
        dim: plain.dim,
        bits: kept.map((i) => plain.bits[i]!),
        documents: kept.map((i) => plain.documents[i]!),
        uris: kept.map((i) => plain.uris[i]!),
        metadatas: kept.map((i) => plain.metadatas[i]!),
      };
      expectBatch(filtered, expected);
      const all = recordDigests(batch);
      expect(hex(recordDigests(filtered))).toBe(kept.map((i) => hex(all.subarray(i * 16, (i + 1) * 16))).join(""));
    }),
    { numRuns: 200 },
  );
});

it("concatBatches keeps the columns aligned, empty batches and views included", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 8 }).chain((dim) =>
        fc.array(plainBatch(5, fc.constant(dim)), { minLength: 1, maxLength: 5 }),
      ),
      fc.array(fc.nat(), { minLength: 5, maxLength: 5 }),
      (plains, cuts) => {
        // Some batches as views (slices) of bigger ones, as the backup's runs are.
        const batches = plains.map((p, k) => {
          const start = cuts[k]! % (p.ids.length + 1);
          return sliceBatch(toBatch(p, k), start, p.ids.length);
        });
        const pieces = plains.map((p, k) => slicePlain(p, cuts[k]! % (p.ids.length + 1), p.ids.length));
        const joined = concatBatches(batches);
        const expected: Plain = {
          ids: pieces.flatMap((p) => p.ids),
          dim: plains[0]!.dim,
          bits: pieces.flatMap((p) => p.bits),
          documents: pieces.flatMap((p) => p.documents),
          uris: pieces.flatMap((p) => p.uris),
          metadatas: pieces.flatMap((p) => p.metadatas),
        };
        expectBatch(joined, expected);
        expect(hex(recordDigests(joined))).toBe(pieces.map((p) => hex(expectedDigests(p))).join(""));
      },
    ),
    { numRuns: 200 },
  );
  const none = concatBatches([]);
  expect(none.ids).toEqual([]);
  expect(none.documents.length).toBe(0);
  expect(none.embeddings.length).toBe(0);
});
