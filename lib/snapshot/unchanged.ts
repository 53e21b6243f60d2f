import { SAFETY_TAG } from "../retention.js";
import type { CollectionEntry, Manifest } from "./manifest.js";

/**
 * The committed snapshot that a new one tagged `tag` would duplicate, if it is identical:
 * the newest safety snapshot for a safety snapshot, else the newest other one (what
 * `latest` restores). A snapshot with a tag duplicates only one with the same tag (the
 * tag is what its caller asked for: found by it, kept by `keepTags`); an untagged one
 * duplicates the newest whatever its tag (restoring `latest` brings back the same data).
 */
export function unchangedFrom(newestFirst: readonly Manifest[], candidate: Pick<Manifest, "tag" | "collections" | "warnings">): Manifest | null {
  const safety = candidate.tag === SAFETY_TAG;
  const previous = newestFirst.find((m) => (m.tag === SAFETY_TAG) === safety);
  if (!previous || (candidate.tag !== null && candidate.tag !== previous.tag)) return null;
  // A backup that saw writes while it read is not a faithful copy of anything.
  if (candidate.warnings.length > 0) return null;
  return sameCollections(previous.collections, candidate.collections) ? previous : null;
}

/**
 * Same collections (by name, in any order) with the same metadata, configuration and
 * dimension, and the same records: the same chunk refs with the same dropped records.
 * Chunks are content-addressed, so equal refs are equal records; the collections' ids are
 * not compared (a restore recreates collections under new ids, with the same data).
 */
function sameCollections(a: readonly CollectionEntry[], b: readonly CollectionEntry[]): boolean {
  if (a.length !== b.length) return false;
  const byName = new Map(a.map((c) => [c.name, c]));
  return b.every((c) => {
    const p = byName.get(c.name);
    return p !== undefined && p.metadataJson === c.metadataJson && p.configurationJson === c.configurationJson && p.schemaJson === c.schemaJson && p.dimension === c.dimension && p.records === c.records && refsKey(p) === refsKey(c);
  });
}

function refsKey(c: CollectionEntry): string {
  return c.chunks.map((r) => `${r.hash}:${(r.drop ?? []).join(",")}`).join(" ");
}
