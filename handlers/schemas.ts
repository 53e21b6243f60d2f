import * as v from "valibot";
import { parseDuration } from "../lib/duration.js";
import { isSnapshotId } from "../lib/snapshot/manifest.js";

export const CollectionName = v.pipe(
  v.string("a collection name is a string"),
  v.regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$/, "a collection name is 3-512 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit"),
);
export const Tag = v.pipe(v.string("a tag is a string"), v.regex(/^[a-zA-Z0-9._-]{1,64}$/, "a tag is 1-64 characters of [a-zA-Z0-9._-]"));
export const SnapshotRef = v.pipe(
  v.string("a snapshot id is a string"),
  v.check((s) => s === "latest" || isSnapshotId(s), 'a snapshot id looks like 20261124T021530Z-3f9a, or is "latest"'),
);
/** Seconds, or "90s" / "15m" / "1h" / "7d"; parsed to seconds. */
export const Duration = v.pipe(
  v.union([v.pipe(v.number(), v.minValue(0)), v.string()], 'a duration is seconds (a number) or a string like "90s", "15m", "1h", "7d"'),
  v.check((d) => {
    try {
      parseDuration(d);
      return true;
    } catch {
      return false;
    }
  }, 'a duration is seconds (a number) or a string like "90s", "15m", "1h", "7d"'),
  v.transform((d) => parseDuration(d)),
);
const Count = v.pipe(v.number("a count is a number"), v.integer("a count is a whole number"), v.minValue(0, "a count is 0 or more"));
const Collections = v.pipe(v.array(CollectionName, "collections is a list of collection names"), v.maxLength(10_000));

export const BackupBody = v.strictObject({
  collections: v.optional(Collections),
  ifOlderThan: v.optional(Duration),
  tag: v.optional(Tag),
  /** Commit a snapshot even when nothing changed since the newest one. */
  force: v.optional(v.boolean("force is true or false")),
});

export const RestoreBody = v.strictObject({
  snapshot: v.optional(SnapshotRef),
  collections: v.optional(Collections),
  rename: v.optional(v.record(CollectionName, CollectionName, "rename maps collection names to new collection names")),
  mode: v.optional(v.picklist(["replace", "merge"], 'mode is "replace" or "merge"')),
  ifEmpty: v.optional(v.boolean("ifEmpty is true or false")),
  safetySnapshot: v.optional(v.boolean("safetySnapshot is true or false")),
  dryRun: v.optional(v.boolean("dryRun is true or false")),
  fallbackToVerified: v.optional(v.boolean("fallbackToVerified is true or false")),
});

export const PruneBody = v.strictObject({
  keepLast: v.optional(Count),
  keepHourly: v.optional(Count),
  keepDaily: v.optional(Count),
  keepWeekly: v.optional(Count),
  keepMonthly: v.optional(Count),
  keepWithin: v.optional(Duration),
  keepTags: v.optional(v.array(Tag, "keepTags is a list of tags")),
  dryRun: v.optional(v.boolean("dryRun is true or false")),
  limit: v.optional(Count),
  /** Unreferenced chunks younger than this are not swept (default 1h). */
  grace: v.optional(Duration),
});

export const ListQuery = v.strictObject({
  tag: v.optional(Tag),
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,6}$/, "limit is a whole number"), v.transform(Number))),
});

/** Every error answer (documented in /openapi.json; built in handlers/errors.ts). */
export const ErrorBody = v.object({
  error: v.object({ code: v.string(), message: v.string(), details: v.optional(v.unknown()) }),
});

const DrillCheck = v.object({ name: v.picklist(["restore", "count", "nearest", "content", "cleanup"]), collection: v.nullable(v.string()), ok: v.boolean(), message: v.string() });

/** POST /backups/:id/drill's answer (documented in /openapi.json). */
export const DrillResponse = v.object({ ok: v.boolean(), snapshot: v.string(), at: v.string(), records: v.number(), durationMs: v.number(), checks: v.array(DrillCheck) });

/** A restore image as GET /status lists it. */
export const ImageSummary = v.object({ snapshot: v.string(), chromaVersion: v.string(), bytes: v.number(), createdAt: v.string() });

/** POST /backups/:id/image's answer: the image, the bytes this build uploaded (the rest was in the store), its drill, the images IMAGE_KEEP then forgot. */
export const ImageResponse = v.object({
  image: ImageSummary,
  uploadedBytes: v.number(),
  drill: v.object({ ok: v.boolean(), snapshot: v.string(), via: v.optional(v.literal("image")), at: v.string(), records: v.number(), bytes: v.number(), durationMs: v.number(), checks: v.array(DrillCheck) }),
  imagesPruned: v.array(v.string()),
});

/** The RPO and RTO parts of GET /status (documented in /openapi.json). */
export const RecoveryObjectives = v.object({
  rpo: v.object({ lastBackupAgeSeconds: v.nullable(v.number()), unprotectedChanges: v.boolean(), nextBackupAt: v.nullable(v.string()) }),
  rto: v.object({ estimatedRestoreSeconds: v.nullable(v.number()), basis: v.string() }),
});
