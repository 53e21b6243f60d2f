/**
 * When a committed backup calls for a new restore image (API.md: IMAGE_INTERVAL): none of
 * this Chroma version exists yet, the newest is older than the interval, or the records
 * grew by more than half since it (a start from it would catch up too much).
 */
import type { ImageManifest } from "./types.js";

/** A new image is due when the records grew by more than this fraction since the newest. */
const GROWTH = 0.5;

/** Why an image of `snapshot` is due, or null when the newest image is fresh enough. */
export function imageDue(
  images: readonly ImageManifest[],
  snapshot: { id: string; records: number },
  want: { chromaVersion: string; intervalSeconds: number; now: Date },
): string | null {
  const newest = images.filter((m) => m.chromaVersion === want.chromaVersion).sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0))[0];
  if (!newest) return `no restore image of Chroma ${want.chromaVersion} yet`;
  if (newest.snapshot === snapshot.id) return null;
  const ageSeconds = (want.now.getTime() - Date.parse(newest.createdAt)) / 1000;
  if (ageSeconds >= want.intervalSeconds) return `the newest restore image (of ${newest.snapshot}) is ${Math.round(ageSeconds)}s old, IMAGE_INTERVAL is ${want.intervalSeconds}s`;
  const imaged = newest.collections.reduce((n, c) => n + c.records, 0);
  if (snapshot.records > imaged * (1 + GROWTH)) return `the records grew from ${imaged} (the newest restore image, of ${newest.snapshot}) to ${snapshot.records}, by more than half`;
  return null;
}
