import fc from "fast-check";
import { expect, it } from "vitest";
import { forEachLimited, mapAhead, TaskPool } from "../../lib/concurrency.js";

const tick = (n: number) => new Promise<void>((resolve) => setTimeout(resolve, n));

/** Counts calls in flight and the most seen at once. */
function gauge() {
  const g = { now: 0, max: 0 };
  const around = async <T>(work: () => Promise<T>): Promise<T> => {
    g.now++;
    g.max = Math.max(g.max, g.now);
    try {
      return await work();
    } finally {
      g.now--;
    }
  };
  return { g, around };
}

it("forEachLimited runs every item once, at most `width` at once", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.nat(3)), fc.integer({ min: 1, max: 5 }), async (delays, width) => {
      const { g, around } = gauge();
      const done: number[] = [];
      await forEachLimited(delays, width, (d, i) => around(async () => void (await tick(d), done.push(i))));
      expect(done.sort((a, b) => a - b)).toEqual(delays.map((_, i) => i));
      expect(g.max).toBeLessThanOrEqual(width);
    }),
    { numRuns: 30 },
  );
});

it("mapAhead yields in order with at most `depth` calls in flight, and pulls its source no further ahead", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.nat(3), { maxLength: 20 }), fc.integer({ min: 1, max: 4 }), async (delays, depth) => {
      const { g, around } = gauge();
      let pulled = 0;
      let consumed = 0;
      async function* source() {
        for (const d of delays) {
          pulled++;
          expect(pulled - consumed).toBeLessThanOrEqual(depth + 1);
          yield d;
        }
      }
      const out: number[] = [];
      for await (const v of mapAhead(source(), depth, (d) => around(async () => (await tick(d), d)))) {
        out.push(v);
        consumed++;
        await tick(1);
      }
      expect(out).toEqual(delays);
      expect(g.max).toBeLessThanOrEqual(depth);
    }),
    { numRuns: 30 },
  );
});

it("mapAhead stops waiting the moment its signal aborts, and rethrows a call's failure in order", async () => {
  const controller = new AbortController();
  const hung = mapAhead([1, 2], 2, () => new Promise<number>(() => {}), controller.signal);
  const next = hung.next();
  controller.abort(new Error("the caller left"));
  await expect(next).rejects.toThrow("the caller left");

  const out: number[] = [];
  const failing = async () => {
    for await (const v of mapAhead([1, 2, 3], 3, async (n) => (n === 2 ? Promise.reject(new Error("two")) : n))) out.push(v);
  };
  await expect(failing()).rejects.toThrow("two");
  expect(out).toEqual([1]);
});

it("TaskPool runs at most `width` tasks; a failure nobody awaited surfaces at the next room() and at drain()", async () => {
  const { g, around } = gauge();
  const pool = new TaskPool(2);
  const results: Promise<number>[] = [];
  for (let i = 0; i < 6; i++) {
    await pool.room();
    results.push(pool.run(() => around(async () => (await tick(2), i))));
  }
  await pool.drain();
  expect(await Promise.all(results)).toEqual([0, 1, 2, 3, 4, 5]);
  expect(g.max).toBe(2);

  const failing = new TaskPool(1);
  void failing.run(async () => {
    await tick(1);
    throw new Error("upload failed");
  });
  await expect(failing.room()).rejects.toThrow("upload failed");
  await expect(failing.drain()).rejects.toThrow("upload failed");
});
