import { describe, expect, it } from "vitest";
import { drillIntervalSeconds } from "../../lib/config.js";
import { drillCollectionName, DrillSchedule } from "../../lib/drill.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { isAsideCollection } from "../../lib/snapshot/aside.js";

describe("restore drills: names and schedule", () => {
  it("names scratch collections so status, backups and the aside sweep treat them as never data", () => {
    const name = drillCollectionName("20261124T021530Z-3f9a", 3);
    expect(name).toMatch(/^drill-20261124T021530Z-3f9a-3\.restore-/);
    expect(isAsideCollection(name)).toBe(true);
    expect(name).toMatch(/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$/);
  });

  it("reads DRILL_INTERVAL: off by default, durations and seconds, a clear error otherwise", () => {
    expect(drillIntervalSeconds({})).toBeNull();
    expect(drillIntervalSeconds({ DRILL_INTERVAL: "off" })).toBeNull();
    expect(drillIntervalSeconds({ DRILL_INTERVAL: "6h" })).toBe(21_600);
    expect(drillIntervalSeconds({ DRILL_INTERVAL: "900" })).toBe(900);
    expect(() => drillIntervalSeconds({ DRILL_INTERVAL: "often" })).toThrow(/DRILL_INTERVAL/);
  });

  it("runs the drill every interval, keeps going after one that could not run, and stops", async () => {
    const logged: [LogLevel, string, LogFields | undefined][] = [];
    let runs = 0;
    const schedule = new DrillSchedule(
      async () => {
        runs++;
        if (runs === 1) throw new Error("no snapshot in the store");
      },
      20,
      (level, message, fields) => logged.push([level, message, fields]),
    );
    schedule.start();
    await expect.poll(() => runs, { timeout: 5000 }).toBeGreaterThanOrEqual(3);
    schedule.stop();
    const after = runs;
    await new Promise((r) => setTimeout(r, 100));
    expect(runs).toBe(after);
    expect(logged[0]?.[0]).toBe("error");
    expect(logged[0]?.[2]).toEqual({ error: "no snapshot in the store" });
  });
});
