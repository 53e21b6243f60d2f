import type { Manifest } from "./manifest.js";

/** A snapshot smaller than this is too small for a drop from it to mean anything. */
const DROP_MIN_RECORDS = 10;

/** Starts every drop warning, so it can be told from the other warnings of a manifest. */
export const DROP_WARNING_PREFIX = "data drop:";

/**
 * Describes how `after` holds far less than `before` (more than half of its records, or
 * of its collections, gone), or null. `selection`: the collections `after` was asked
 * for; only those of `before` are compared (a partial backup is not a drop).
 */
export function describeDrop(before: Manifest, after: Pick<Manifest, "records" | "collections">, selection?: readonly string[]): string | null {
  const scope = selection ? before.collections.filter((c) => selection.includes(c.name)) : before.collections;
  const beforeRecords = scope.reduce((n, c) => n + c.records, 0);
  if (beforeRecords < DROP_MIN_RECORDS) return null;
  const present = new Set(after.collections.map((c) => c.name));
  const gone = scope.filter((c) => !present.has(c.name)).map((c) => c.name);
  const recordsDropped = after.records * 2 < beforeRecords;
  const collectionsDropped = gone.length * 2 > scope.length;
  if (!recordsDropped && !collectionsDropped) return null;
  const lost = gone.length > 0 ? `; collections gone: ${gone.slice(0, 5).join(", ")}${gone.length > 5 ? ` and ${gone.length - 5} more` : ""}` : "";
  return (
    `${DROP_WARNING_PREFIX} this snapshot holds ${after.records} records in ${after.collections.length} collection(s), against ${beforeRecords} in ${scope.length} in the snapshot before it (${before.id})${lost}. ` +
    `If that loss was not intended, restore the earlier one (POST /restore {"snapshot": "${before.id}"}); retention keeps it for RETENTION_KEEP_BEFORE_DROP.`
  );
}
