import { newestFirst } from "./snapshot/catalog.js";
import { describeDrop } from "./snapshot/drop.js";
import type { Manifest } from "./snapshot/manifest.js";

export interface RetentionRules {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  /** Seconds: keep everything this much younger than the newest snapshot. */
  keepWithin?: number;
  /** Snapshots with these tags are kept, outside the rules above. */
  keepTags?: string[];
  /** How many `pre-restore` safety snapshots to keep (their own rule). */
  keepSafety?: number;
  /**
   * Seconds (RETENTION_KEEP_BEFORE_DROP): after a snapshot holding far less than the one
   * before it (describeDrop), that one is kept this long; 0 or unset: no such rule.
   */
  keepBeforeDrop?: number;
}

export const SAFETY_TAG = "pre-restore";

export interface RetentionDecision {
  keep: Manifest[];
  forget: Manifest[];
  /** Why each kept snapshot is kept. */
  reasons: Map<string, string[]>;
}

const bucketers: [keyof RetentionRules, (d: Date) => string][] = [
  ["keepHourly", (d) => d.toISOString().slice(0, 13)],
  ["keepDaily", (d) => d.toISOString().slice(0, 10)],
  ["keepWeekly", isoWeek],
  ["keepMonthly", (d) => d.toISOString().slice(0, 7)],
];

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  return `${t.getUTCFullYear()}-W${Math.ceil(((t.getTime() - yearStart) / 86400000 + 1) / 7)}`;
}

/**
 * Which snapshots to keep. As in restic, a snapshot is kept if any rule keeps it; the
 * hourly/daily/weekly/monthly rules keep the newest snapshot in each of the last N
 * periods (UTC) that have one. `pre-restore` snapshots follow only `keepSafety`.
 */
export function applyRetention(snapshots: Manifest[], rules: RetentionRules, now: Date = new Date()): RetentionDecision {
  const newest = [...snapshots].sort(newestFirst);
  const reasons = new Map<string, string[]>();
  const keep = (m: Manifest, why: string) => reasons.set(m.id, [...(reasons.get(m.id) ?? []), why]);

  const safety = newest.filter((m) => m.tag === SAFETY_TAG);
  safety.slice(0, rules.keepSafety ?? 3).forEach((m) => keep(m, "keepSafety"));
  const tagged = new Set(rules.keepTags ?? []);
  const general = newest.filter((m) => m.tag !== SAFETY_TAG);
  for (const m of general) if (m.tag !== null && tagged.has(m.tag)) keep(m, `keepTags:${m.tag}`);
  const ruled = general.filter((m) => m.tag === null || !tagged.has(m.tag));

  ruled.slice(0, rules.keepLast ?? 0).forEach((m) => keep(m, "keepLast"));
  for (const [rule, bucket] of bucketers) {
    const n = (rules[rule] as number | undefined) ?? 0;
    const seen = new Set<string>();
    for (const m of ruled) {
      if (seen.size >= n) break;
      const b = bucket(new Date(m.createdAt));
      if (seen.has(b)) continue;
      seen.add(b);
      keep(m, rule);
    }
  }
  if (rules.keepWithin !== undefined && ruled[0]) {
    const since = Date.parse(ruled[0].createdAt) - rules.keepWithin * 1000;
    for (const m of ruled) if (Date.parse(m.createdAt) >= since) keep(m, "keepWithin");
  }
  for (const m of keptBeforeDrop(general, rules.keepBeforeDrop ?? 0, now)) keep(m, "keepBeforeDrop");
  return { keep: newest.filter((m) => reasons.has(m.id)), forget: newest.filter((m) => !reasons.has(m.id)), reasons };
}

/**
 * The snapshots each directly followed by a drop (describeDrop) less than `seconds` ago.
 * Computed from the manifests alone (their record and collection counts, in time order),
 * so every runtime, stateless ones included, keeps the same ones.
 */
function keptBeforeDrop(newestFirst: Manifest[], seconds: number, now: Date): Manifest[] {
  if (!(seconds > 0)) return [];
  const kept: Manifest[] = [];
  for (let i = 0; i + 1 < newestFirst.length; i++) {
    const after = newestFirst[i]!;
    if (now.getTime() - Date.parse(after.createdAt) >= seconds * 1000) break; // older drops are too old too
    if (describeDrop(newestFirst[i + 1]!, after)) kept.push(newestFirst[i + 1]!);
  }
  return kept;
}
