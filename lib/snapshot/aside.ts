import type { ChromaRest } from "../chroma/rest.js";
import type { Logger } from "../log.js";

/**
 * Collections a `replace` restore builds aside, under a temporary name, before swapping
 * them in: `<target>.restore-<creation ms, base 36><random>`. They are never data: never
 * backed up, never counted, and swept when a restore died before its swap.
 */
const ASIDE_MARK = ".restore-";
const ASIDE_PATTERN = /\.restore-([0-9a-z]+)$/;

/** An aside collection younger than this may be one another instance (sharing a remote Chroma) is building. */
export const ASIDE_STALE_MS = 30 * 60_000;

/** The aside collections this process is building right now: never swept. */
const building = new Set<string>();

/** A fresh aside name for `target` (cut to fit Chroma's 512 characters). */
export function asideName(target: string, now = Date.now()): string {
  const suffix = `${ASIDE_MARK}${now.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  return target.slice(0, 512 - suffix.length) + suffix;
}

/** A collection a restore builds aside before swapping it in; never backed up, never counted as data. */
export function isAsideCollection(name: string): boolean {
  return ASIDE_PATTERN.test(name);
}

/** When the aside collection was created (its name says), or null when that cannot be told. */
export function asideCreatedAt(name: string): number | null {
  const mark = ASIDE_PATTERN.exec(name)?.[1];
  // Date.now() is 8 base-36 digits from 1973 to 2059; the random part follows.
  if (!mark || mark.length < 9) return null;
  const ms = parseInt(mark.slice(0, 8), 36);
  return ms > Date.UTC(2020, 0, 1) && ms < Date.now() + 86_400_000 ? ms : null;
}

/** The collection an aside name was made for (a prefix of it when the target was cut to fit). */
function asideTarget(name: string): string {
  return name.slice(0, name.lastIndexOf(ASIDE_MARK));
}

/** Marks `name` as being built by this process while `work` runs, so no sweep takes it. */
export async function buildingAside<T>(name: string, work: () => Promise<T>): Promise<T> {
  building.add(name);
  try {
    return await work();
  } finally {
    building.delete(name);
  }
}

export interface SweepOptions {
  /** Only asides at least this old (by the time in their name; 0: all; one whose age cannot be told counts as old only with 0). Default 0. */
  olderThanMs?: number;
  /** Asides for these targets go whatever their age: a new restore of the same collection supersedes them. */
  targets?: string[];
  now?: () => number;
}

export interface SweptCollection {
  name: string;
  /** Records it held, null when the count failed. */
  records: number | null;
}

/**
 * Deletes aside collections a restore left behind (it died before its swap), except the
 * ones this process is building now. With a remote Chroma another instance may be
 * restoring into it, so a later restore passes `olderThanMs` (ASIDE_STALE_MS) and sweeps
 * the young ones only for its own targets; a start of the embedded Chroma, which nothing
 * else writes to, sweeps them all. Logged at warn with names and record counts.
 */
export async function sweepAsideCollections(chroma: ChromaRest, log: Logger, options: SweepOptions = {}): Promise<SweptCollection[]> {
  const olderThanMs = options.olderThanMs ?? 0;
  const now = (options.now ?? Date.now)();
  const targets = options.targets ?? [];
  const swept: SweptCollection[] = [];
  for (const c of await chroma.listCollections()) {
    if (!isAsideCollection(c.name) || building.has(c.name)) continue;
    const base = asideTarget(c.name);
    // A long target was cut to fit the aside name in 512 characters.
    const forTarget = targets.some((t) => t === base || (c.name.length >= 500 && t.startsWith(base)));
    const created = asideCreatedAt(c.name);
    const old = olderThanMs === 0 || (created !== null && now - created >= olderThanMs);
    if (!forTarget && !old) continue;
    const records = await chroma.count(c.id).catch(() => null);
    await chroma.deleteCollection(c.name);
    swept.push({ name: c.name, records });
  }
  if (swept.length > 0) {
    log("warn", "deleted collections an interrupted restore had left aside (their data is in the snapshot it was restoring)", {
      collections: swept.map((s) => s.name),
      records: swept.reduce((n, s) => n + (s.records ?? 0), 0),
      counts: Object.fromEntries(swept.map((s) => [s.name, s.records])),
    });
  }
  return swept;
}
