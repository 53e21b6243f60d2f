/**
 * unchangedFrom over synthetic manifests: which committed snapshot a new one would
 * duplicate (same tag rules, same collections, same chunk refs and drops, same metadata
 * and configuration), and every difference that makes it a change.
 */
import { describe, expect, it } from "vitest";
import type { CollectionEntry, Manifest } from "../../lib/snapshot/manifest.js";
import { unchangedFrom } from "../../lib/snapshot/unchanged.js";

const H = (c: string) => c.repeat(64);

function entry(name: string, over: Partial<CollectionEntry> = {}): CollectionEntry {
  return {
    name,
    id: `id-${name}`,
    metadataJson: '{"owner":"a"}',
    configurationJson: '{"hnsw":{"space":"l2"}}',
    dimension: 8,
    records: 10,
    recordsAtStart: 10,
    recordsAtEnd: 10,
    bytes: 100,
    chunks: [{ hash: H("a"), records: 12, bytes: 100, decodedBytes: 400, drop: [3, 7] }],
    ...over,
  };
}

function manifest(id: string, tag: string | null, collections: CollectionEntry[], warnings: string[] = []): Manifest {
  return {
    format: 2,
    id,
    createdAt: "2026-05-01T00:00:00.000Z",
    durationMs: 1,
    tag,
    chroma: { url: "http://chroma.test", version: "1.0.0", tenant: "t", database: "d" },
    collections,
    records: collections.reduce((n, c) => n + c.records, 0),
    bytes: 0,
    newBytes: 0,
    warnings,
  };
}

describe("unchangedFrom", () => {
  const base = manifest("newest", null, [entry("a"), entry("b")]);

  it("an identical read duplicates the newest snapshot (collections in any order, ids and counts at start aside)", () => {
    expect(unchangedFrom([base], { tag: null, collections: [entry("b"), entry("a", { id: "recreated" })], warnings: [] })).toBe(base);
  });

  it("any change of data, metadata, configuration or collections is a change", () => {
    const changes: CollectionEntry[][] = [
      [entry("a")], // a collection gone
      [entry("a"), entry("b"), entry("c")], // one more
      [entry("a"), entry("b", { metadataJson: '{"owner":"b"}' })],
      [entry("a"), entry("b", { configurationJson: '{"hnsw":{"space":"ip"}}' })],
      [entry("a"), entry("b", { dimension: 16 })],
      [entry("a"), entry("b", { records: 9, chunks: [{ hash: H("a"), records: 12, bytes: 100, decodedBytes: 400, drop: [3, 7, 8] }] })],
      [entry("a"), entry("b", { chunks: [{ hash: H("b"), records: 12, bytes: 100, decodedBytes: 400, drop: [3, 7] }] })],
      [entry("a"), entry("b", { chunks: [...entry("b").chunks, { hash: H("c"), records: 0, bytes: 1, decodedBytes: 1 }] })],
      [entry("a"), entry("renamed")],
    ];
    for (const collections of changes) expect(unchangedFrom([base], { tag: null, collections, warnings: [] })).toBeNull();
  });

  it("a read that saw writes (a warning) is never a duplicate; an empty store has nothing to duplicate", () => {
    expect(unchangedFrom([base], { tag: null, collections: base.collections, warnings: ["collection a changed during the backup"] })).toBeNull();
    expect(unchangedFrom([], { tag: null, collections: [], warnings: [] })).toBeNull();
  });

  it("tags: an untagged read duplicates the newest whatever its tag; a tagged one only a newest with the same tag", () => {
    const nightly = manifest("nightly", "nightly", base.collections);
    expect(unchangedFrom([nightly, base], { tag: null, collections: base.collections, warnings: [] })).toBe(nightly);
    expect(unchangedFrom([nightly, base], { tag: "nightly", collections: base.collections, warnings: [] })).toBe(nightly);
    expect(unchangedFrom([nightly, base], { tag: "release", collections: base.collections, warnings: [] })).toBeNull();
    // Only the newest is compared: an older identical one with the tag is not enough.
    expect(unchangedFrom([base, nightly], { tag: "nightly", collections: base.collections, warnings: [] })).toBeNull();
  });

  it("safety snapshots are compared with the newest safety snapshot only, and others never with a safety snapshot", () => {
    const safety = manifest("safety", "pre-restore", [entry("a")]);
    const newer = manifest("newer", null, [entry("a"), entry("b")]);
    expect(unchangedFrom([newer, safety], { tag: "pre-restore", collections: [entry("a")], warnings: [] })).toBe(safety);
    expect(unchangedFrom([safety, base], { tag: null, collections: base.collections, warnings: [] })).toBe(base);
    expect(unchangedFrom([safety, base], { tag: null, collections: [entry("a")], warnings: [] })).toBeNull();
    expect(unchangedFrom([base], { tag: "pre-restore", collections: base.collections, warnings: [] })).toBeNull();
  });
});
