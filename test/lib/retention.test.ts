/**
 * applyRetention over synthetic manifests (only id, createdAt and tag matter): each rule
 * alone, the union of rules (restic's "kept if any rule keeps it"), safety snapshots'
 * own rule, and properties checked with fast-check.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { applyRetention, SAFETY_TAG, type RetentionRules } from "../../lib/retention.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";

function snap(createdAt: string, tag: string | null = null, id = `${createdAt}|${tag ?? ""}`): Manifest {
  return {
    format: 1,
    id,
    createdAt: new Date(createdAt).toISOString(),
    durationMs: 0,
    tag,
    chroma: { url: "http://chroma.test", version: null, tenant: "default_tenant", database: "default_database" },
    collections: [],
    records: 0,
    bytes: 0,
    newBytes: 0,
    warnings: [],
  };
}

const idsOf = (ms: Manifest[]) => ms.map((m) => m.id);
const kept = (ms: Manifest[], rules: RetentionRules) => idsOf(applyRetention(ms, rules).keep);

/** Shuffled deterministically: the input order must not matter. */
function shuffled<T>(xs: T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = (i * 7919) % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const hourly = (from: string, n: number, tag: string | null = null) => Array.from({ length: n }, (_, i) => snap(new Date(Date.parse(from) + i * 3600_000).toISOString(), tag));

describe("each rule", () => {
  it("keepLast keeps the n newest, whatever the input order; the rest are forgotten, newest first", () => {
    const all = hourly("2026-03-01T00:00:00Z", 10);
    const decision = applyRetention(shuffled(all), { keepLast: 3 });
    expect(idsOf(decision.keep)).toEqual(idsOf(all.slice(7).reverse()));
    expect(idsOf(decision.forget)).toEqual(idsOf(all.slice(0, 7).reverse()));
    for (const m of decision.keep) expect(decision.reasons.get(m.id)).toEqual(["keepLast"]);
    expect(kept(all, { keepLast: 0 })).toEqual([]);
    expect(kept(all, { keepLast: 50 })).toHaveLength(10);
    expect(kept(all, {})).toEqual([]);
    expect(kept([], { keepLast: 3, keepDaily: 3, keepWithin: 3600 })).toEqual([]);
  });

  it("keepHourly keeps the newest snapshot in each of the last n hours that have one", () => {
    const all = ["10:05", "10:40", "11:10", "11:50", "13:30", "13:01", "15:59"].map((t) => snap(`2026-03-01T${t}:00Z`));
    expect(kept(all, { keepHourly: 3 })).toEqual(["15:59", "13:30", "11:50"].map((t) => snap(`2026-03-01T${t}:00Z`).id));
    expect(kept(all, { keepHourly: 10 })).toHaveLength(4);
  });

  it("keepDaily and keepMonthly bucket by UTC day and month", () => {
    const all = ["2026-01-30T08:00:00Z", "2026-01-31T23:59:59Z", "2026-02-01T00:00:00Z", "2026-02-01T12:00:00Z", "2026-02-28T01:00:00Z", "2026-03-02T00:30:00Z"].map((t) => snap(t));
    const id = (t: string) => snap(t).id;
    expect(kept(all, { keepDaily: 3 })).toEqual([id("2026-03-02T00:30:00Z"), id("2026-02-28T01:00:00Z"), id("2026-02-01T12:00:00Z")]);
    expect(kept(all, { keepMonthly: 3 })).toEqual([id("2026-03-02T00:30:00Z"), id("2026-02-28T01:00:00Z"), id("2026-01-31T23:59:59Z")]);
    // A snapshot at 23:30 UTC belongs to that UTC day, whatever the local zone.
    expect(kept([snap("2026-05-01T23:30:00Z"), snap("2026-05-02T00:30:00Z")], { keepDaily: 2 })).toHaveLength(2);
  });

  it("keepWeekly buckets by ISO week (Monday to Sunday, across the new year)", () => {
    // 2026-01-01 is a Thursday: ISO week 2026-W01 runs from Monday 2025-12-29 to Sunday 2026-01-04.
    const sun28 = snap("2025-12-28T12:00:00Z"); // 2025-W52
    const mon29 = snap("2025-12-29T12:00:00Z"); // 2026-W01
    const fri02 = snap("2026-01-02T12:00:00Z"); // 2026-W01
    const sun04 = snap("2026-01-04T23:00:00Z"); // 2026-W01
    const mon05 = snap("2026-01-05T00:10:00Z"); // 2026-W02
    const all = [sun28, mon29, fri02, sun04, mon05];
    expect(kept(all, { keepWeekly: 2 })).toEqual([mon05.id, sun04.id]);
    expect(kept(all, { keepWeekly: 3 })).toEqual([mon05.id, sun04.id, sun28.id]);
    expect(kept([mon29, fri02], { keepWeekly: 5 })).toEqual([fri02.id]);
  });

  it("keepWithin keeps everything within that span of the newest snapshot, not of the wall clock", () => {
    const newest = snap("2020-06-10T12:00:00Z");
    const inside = snap("2020-06-09T13:00:00Z"); // 23 h older
    const edge = snap("2020-06-09T12:00:00Z"); // exactly 24 h older
    const outside = snap("2020-06-09T11:00:00Z"); // 25 h older
    expect(kept([outside, edge, inside, newest], { keepWithin: 86400 })).toEqual([newest.id, inside.id, edge.id]);
    expect(kept([outside, newest], { keepWithin: 0 })).toEqual([newest.id]);
  });

  it("keepTags keeps every snapshot with those tags, outside the other rules, which ignore them", () => {
    const all = [
      snap("2026-01-01T00:00:00Z", "release"),
      snap("2026-01-02T00:00:00Z"),
      snap("2026-01-03T00:00:00Z", "nightly"),
      snap("2026-01-04T00:00:00Z"),
      snap("2026-01-05T00:00:00Z", "release"),
      snap("2026-01-06T00:00:00Z", "release"),
    ];
    const decision = applyRetention(all, { keepLast: 2, keepTags: ["release"] });
    // Both releases are kept, and keepLast counts the newest two others (a tag not listed counts like none).
    expect(idsOf(decision.keep)).toEqual([all[5]!.id, all[4]!.id, all[3]!.id, all[2]!.id, all[0]!.id]);
    expect(decision.reasons.get(all[5]!.id)).toEqual(["keepTags:release"]);
    expect(decision.reasons.get(all[3]!.id)).toEqual(["keepLast"]);
    expect(idsOf(decision.forget)).toEqual([all[1]!.id]);
    // Without keepTags, tagged snapshots are ordinary.
    expect(kept(all, { keepLast: 2 })).toEqual([all[5]!.id, all[4]!.id]);
  });

  it("pre-restore safety snapshots follow only keepSafety (default 3) and take no other rule's place", () => {
    const safety = hourly("2026-04-01T00:00:00Z", 5, SAFETY_TAG).map((m, i) => snap(new Date(Date.parse(m.createdAt) + 30 * 60_000 + i).toISOString(), SAFETY_TAG));
    const plain = hourly("2026-04-01T00:00:00Z", 5);
    const all = [...plain, ...safety];
    expect(kept(all, { keepLast: 2, keepSafety: 2 })).toEqual([safety[4]!.id, plain[4]!.id, safety[3]!.id, plain[3]!.id]);
    expect(kept(all, { keepSafety: 0 })).toEqual([]);
    expect(kept(safety, {})).toEqual(idsOf(safety.slice(2).reverse())); // the default: 3
    // No other rule keeps a safety snapshot: not keepLast, the calendar rules, keepWithin, nor keepTags.
    const rules: RetentionRules = { keepLast: 100, keepHourly: 100, keepDaily: 100, keepWithin: 10 * 86400, keepTags: [SAFETY_TAG], keepSafety: 1 };
    expect(applyRetention(all, rules).keep.filter((m) => m.tag === SAFETY_TAG).map((m) => m.id)).toEqual([safety[4]!.id]);
    expect(applyRetention(all, rules).reasons.get(safety[4]!.id)).toEqual(["keepSafety"]);
  });
});

describe("the union of rules", () => {
  it("a snapshot is kept if any rule keeps it, with every reason recorded", () => {
    const all = [
      ...hourly("2026-01-01T09:00:00Z", 3), // day 1: 09, 10, 11
      ...hourly("2026-01-02T09:00:00Z", 3), // day 2
      ...hourly("2026-01-03T09:00:00Z", 3), // day 3
      snap("2025-12-01T00:00:00Z", "release"),
    ];
    const rules: RetentionRules = { keepLast: 2, keepDaily: 3, keepHourly: 1, keepTags: ["release"] };
    const decision = applyRetention(all, rules);
    const id = (t: string, tag: string | null = null) => snap(t, tag).id;
    expect(idsOf(decision.keep)).toEqual([id("2026-01-03T11:00:00.000Z"), id("2026-01-03T10:00:00.000Z"), id("2026-01-02T11:00:00.000Z"), id("2026-01-01T11:00:00.000Z"), id("2025-12-01T00:00:00Z", "release")]);
    expect(decision.reasons.get(id("2026-01-03T11:00:00.000Z"))).toEqual(["keepLast", "keepHourly", "keepDaily"]);
    expect(decision.reasons.get(id("2026-01-03T10:00:00.000Z"))).toEqual(["keepLast"]);
    expect(decision.reasons.get(id("2026-01-02T11:00:00.000Z"))).toEqual(["keepDaily"]);
    // Each rule alone keeps a subset of the union.
    const union = new Set(idsOf(decision.keep));
    for (const only of [{ keepLast: 2 }, { keepDaily: 3 }, { keepHourly: 1 }, { keepTags: ["release"] }]) for (const k of kept(all, only)) expect(union.has(k)).toBe(true);
    expect(decision.keep.length + decision.forget.length).toBe(all.length);
  });
});

describe("properties", () => {
  const TAGS = [null, null, null, SAFETY_TAG, "release", "nightly"] as const;
  const BASE = Date.parse("2025-06-01T00:00:00Z");

  /** Snapshots at distinct times spread over ~120 days, with arbitrary tags. */
  const snapshots = fc
    .uniqueArray(fc.integer({ min: 0, max: 120 * 86400 }), { maxLength: 60 })
    .chain((seconds) => fc.tuple(fc.constant(seconds), fc.array(fc.constantFrom(...TAGS), { minLength: seconds.length, maxLength: seconds.length })))
    .map(([seconds, tags]) => seconds.map((s, i) => snap(new Date(BASE + s * 1000).toISOString(), tags[i]!, `s${i}`)));

  const count = fc.option(fc.integer({ min: 0, max: 8 }), { nil: undefined });
  const rules: fc.Arbitrary<RetentionRules> = fc.record({
    keepLast: count,
    keepHourly: count,
    keepDaily: count,
    keepWeekly: count,
    keepMonthly: count,
    keepWithin: fc.option(fc.integer({ min: 0, max: 30 * 86400 }), { nil: undefined }),
    keepTags: fc.option(fc.subarray(["release", "nightly"]), { nil: undefined }),
    keepSafety: count,
  });

  const newestFirst = (ms: Manifest[]) => [...ms].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));

  it("kept and forgotten partition the snapshots, both newest first, every kept one with a reason", () => {
    fc.assert(
      fc.property(snapshots, rules, (all, r) => {
        const d = applyRetention(all, r);
        const keptIds = idsOf(d.keep);
        const forgotIds = idsOf(d.forget);
        expect(new Set([...keptIds, ...forgotIds]).size).toBe(all.length);
        expect(keptIds.length + forgotIds.length).toBe(all.length);
        expect(keptIds.filter((id) => forgotIds.includes(id))).toEqual([]);
        expect(keptIds).toEqual(idsOf(newestFirst(d.keep)));
        expect(forgotIds).toEqual(idsOf(newestFirst(d.forget)));
        for (const id of keptIds) expect(d.reasons.get(id)?.length).toBeGreaterThan(0);
        for (const id of forgotIds) expect(d.reasons.has(id)).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it("keepLast n always keeps the n newest snapshots the general rules govern (untagged, or tagged but not in keepTags)", () => {
    fc.assert(
      fc.property(snapshots, rules, fc.integer({ min: 0, max: 10 }), (all, r, n) => {
        const keep = new Set(kept(all, { ...r, keepLast: n }));
        const governed = newestFirst(all).filter((m) => m.tag !== SAFETY_TAG && !(m.tag !== null && (r.keepTags ?? []).includes(m.tag)));
        for (const m of governed.slice(0, n)) expect(keep.has(m.id)).toBe(true);
        const untagged = newestFirst(all).filter((m) => m.tag === null);
        if (governed.every((m) => m.tag === null)) for (const m of untagged.slice(0, n)) expect(keep.has(m.id)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("tags listed in keepTags are always kept; exactly the newest keepSafety pre-restore snapshots are kept", () => {
    fc.assert(
      fc.property(snapshots, rules, (all, r) => {
        const keep = new Set(kept(all, r));
        for (const m of all) if (m.tag !== null && m.tag !== SAFETY_TAG && (r.keepTags ?? []).includes(m.tag)) expect(keep.has(m.id)).toBe(true);
        const safety = newestFirst(all).filter((m) => m.tag === SAFETY_TAG);
        const n = r.keepSafety ?? 3;
        expect(safety.filter((m) => keep.has(m.id)).map((m) => m.id)).toEqual(idsOf(safety.slice(0, n)));
      }),
      { numRuns: 300 },
    );
  });

  it("adding a rule never forgets a snapshot that was kept (kept if any rule keeps it)", () => {
    fc.assert(
      fc.property(snapshots, rules, rules, (all, a, b) => {
        const before = kept(all, a);
        const more: RetentionRules = {
          keepLast: Math.max(a.keepLast ?? 0, b.keepLast ?? 0),
          keepHourly: Math.max(a.keepHourly ?? 0, b.keepHourly ?? 0),
          keepDaily: Math.max(a.keepDaily ?? 0, b.keepDaily ?? 0),
          keepWeekly: Math.max(a.keepWeekly ?? 0, b.keepWeekly ?? 0),
          keepMonthly: Math.max(a.keepMonthly ?? 0, b.keepMonthly ?? 0),
          keepWithin: a.keepWithin === undefined && b.keepWithin === undefined ? undefined : Math.max(a.keepWithin ?? 0, b.keepWithin ?? 0),
          keepTags: [...(a.keepTags ?? [])],
          keepSafety: a.keepSafety,
        };
        const after = new Set(kept(all, more));
        for (const id of before) expect(after.has(id)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("retention is idempotent: applied to what it kept, it forgets nothing more (a second prune deletes nothing)", () => {
    fc.assert(
      fc.property(snapshots, rules, (all, r) => {
        const first = applyRetention(all, r).keep;
        expect(idsOf(applyRetention(first, r).forget)).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe("keepBeforeDrop: the snapshot from before a drop is kept for a while", () => {
  const DAY = 86400;
  /** A snapshot holding `records`, spread over the named collections. */
  function sized(createdAt: string, records: number, names: string[] = ["docs"]): Manifest {
    const m = snap(createdAt);
    m.collections = names.map((name, i) => ({
      name,
      id: `id-${name}`,
      metadataJson: "null",
      configurationJson: "{}",
      dimension: 8,
      records: Math.floor(records / names.length) + (i < records % names.length ? 1 : 0),
      recordsAtStart: 0,
      recordsAtEnd: 0,
      bytes: 0,
      chunks: [],
    }));
    m.records = records;
    return m;
  }
  const now = new Date("2026-05-10T12:00:00Z");

  it("the issue's scenario: 2,000 records, then four 1-record snapshots, keepLast 3: the 2,000-record one stays", () => {
    const good = sized("2026-05-10T08:00:00Z", 2000);
    const bad = [1, 2, 3, 4].map((h) => sized(`2026-05-10T${String(8 + h).padStart(2, "0")}:00:00Z`, 1));
    const all = [good, ...bad];
    const decision = applyRetention(all, { keepLast: 3, keepBeforeDrop: 30 * DAY }, now);
    expect(idsOf(decision.keep)).toEqual([bad[3]!.id, bad[2]!.id, bad[1]!.id, good.id]);
    expect(decision.reasons.get(good.id)).toEqual(["keepBeforeDrop"]);
    expect(idsOf(decision.forget)).toEqual([bad[0]!.id]);
    // The next prune sees the good one followed by a 1-record one: still a drop, still kept.
    expect(idsOf(applyRetention(decision.keep, { keepLast: 3, keepBeforeDrop: 30 * DAY }, now).keep)).toContain(good.id);
    // Without the rule (0, or unset) it would have gone.
    expect(kept(all, { keepLast: 3, keepBeforeDrop: 0 })).not.toContain(good.id);
    expect(kept(all, { keepLast: 3 })).not.toContain(good.id);
  });

  it("only for RETENTION_KEEP_BEFORE_DROP after the drop (measured from the drop, on the wall clock)", () => {
    const good = sized("2026-04-01T00:00:00Z", 500);
    const drop = sized("2026-04-02T00:00:00Z", 100);
    const later = sized("2026-04-20T00:00:00Z", 100);
    const rules: RetentionRules = { keepLast: 1, keepBeforeDrop: 30 * DAY };
    expect(applyRetention([good, drop, later], rules, new Date("2026-05-01T23:59:00Z")).reasons.get(good.id)).toEqual(["keepBeforeDrop"]);
    expect(kept([good, drop, later], rules)).toEqual([later.id]); // now: long after
    expect(idsOf(applyRetention([good, drop, later], rules, new Date("2026-05-02T00:00:01Z")).keep)).toEqual([later.id]);
  });

  it("a drop is more than half the records, or more than half the collections, gone; small snapshots and growth are no drop", () => {
    const rules: RetentionRules = { keepLast: 1, keepBeforeDrop: 30 * DAY };
    const at = (n: number) => `2026-05-0${n}T00:00:00Z`;
    const keeps = (a: Manifest, b: Manifest) => idsOf(applyRetention([a, b], rules, now).keep).includes(a.id);
    expect(keeps(sized(at(1), 100), sized(at(2), 49))).toBe(true);
    expect(keeps(sized(at(1), 100), sized(at(2), 50))).toBe(false); // half is not more than half
    expect(keeps(sized(at(1), 9), sized(at(2), 0))).toBe(false); // too small to mean anything
    expect(keeps(sized(at(1), 10), sized(at(2), 0))).toBe(true);
    expect(keeps(sized(at(1), 100), sized(at(2), 5000))).toBe(false);
    // Three collections, two of them gone, the records kept in the third.
    expect(keeps(sized(at(1), 300, ["a", "b", "c"]), sized(at(2), 300, ["a"]))).toBe(true);
    expect(keeps(sized(at(1), 300, ["a", "b"]), sized(at(2), 300, ["a"]))).toBe(false); // one of two: not more than half
    // Renamed collections count as gone.
    expect(keeps(sized(at(1), 300, ["a", "b"]), sized(at(2), 300, ["x", "y"]))).toBe(true);
  });

  it("each drop keeps the snapshot just before it; safety snapshots neither count nor are kept by it", () => {
    const a = sized("2026-05-01T00:00:00Z", 1000);
    const b = sized("2026-05-02T00:00:00Z", 400); // drop from a
    const c = sized("2026-05-03T00:00:00Z", 150); // drop from b
    const d = sized("2026-05-04T00:00:00Z", 150);
    const safety = { ...sized("2026-05-03T12:00:00Z", 5), tag: SAFETY_TAG, id: "safety" };
    const decision = applyRetention([a, b, c, d, safety], { keepLast: 1, keepSafety: 0, keepBeforeDrop: 30 * DAY }, now);
    expect(idsOf(decision.keep)).toEqual([d.id, b.id, a.id]);
    expect(decision.reasons.get(a.id)).toEqual(["keepBeforeDrop"]);
    expect(decision.reasons.get(b.id)).toEqual(["keepBeforeDrop"]);
  });

  it("snapshots created in the same millisecond are ordered by id", () => {
    const t = "2026-05-01T00:00:00.000Z";
    const big = { ...sized(t, 1000), id: "20260501T000000Z-0001" };
    const small = { ...sized(t, 1), id: "20260501T000000Z-0002" };
    for (const order of [[big, small], [small, big]]) {
      const decision = applyRetention(order, { keepLast: 1, keepBeforeDrop: 30 * DAY }, now);
      expect(idsOf(decision.keep)).toEqual([small.id, big.id]);
    }
  });
});
