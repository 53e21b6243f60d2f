/**
 * The one retry layer (retryingStorage): what it retries, what it never retries, its
 * bounds (attempts and total time), its timeouts, and its log lines. Over the real memory
 * driver, with faults from test/fixtures/faulty-storage.ts and a store that never answers.
 */
import { describe, expect, it } from "vitest";
import type { LogFields } from "../../lib/log.js";
import { StorageError } from "../../lib/storage/errors.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { retryingStorage } from "../../lib/storage/retry.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";
import { faultyStorage, type FaultKind } from "../fixtures/faulty-storage.js";

const bytes = (s: string) => new TextEncoder().encode(s);
const FAST = { baseDelayMs: 1, maxDelayMs: 5 };

function logged() {
  const lines: { level: string; message: string; fields: LogFields }[] = [];
  return { lines, log: (level: string, message: string, fields: LogFields = {}) => lines.push({ level, message, fields }) };
}

/** A store whose every call waits forever (what a frozen connection looks like to a caller). */
function hangingStorage(): Storage & { calls: number } {
  const never = () => new Promise<never>(() => {});
  const self = {
    driver: "hang",
    capabilities: { atomicPutIfAbsent: true },
    calls: 0,
    put: () => (self.calls++, never()),
    putIfAbsent: () => (self.calls++, never()),
    get: () => (self.calls++, never()),
    head: () => (self.calls++, never()),
    delete: () => (self.calls++, never()),
    list: () => ({
      [Symbol.asyncIterator]: () => {
        self.calls++;
        return { next: never };
      },
    }),
  };
  return self;
}

describe("retryingStorage", () => {
  it("retries transient failures of repeatable calls, logging each retry at warn with driver, operation, key, attempt and error", async () => {
    const inner = memoryStorage();
    await inner.put("a/key", bytes("hello"));
    const faulty = faultyStorage(inner, { plan: ({ n }) => (n < 2 ? "transient" : null) });
    const { lines, log } = logged();
    const store = retryingStorage(faulty, { ...FAST, log });
    expect((await store.head("a/key")).size).toBe(5);
    expect(faulty.stats.calls).toBe(3);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ level: "warn", fields: { driver: "memory", operation: "head", key: "a/key", attempt: 1 } });
    expect(lines[0]!.fields.error).toMatch(/HTTP (503|429)/);
    expect(lines[1]!.fields.attempt).toBe(2);
  });

  it("never retries a non-retryable failure, a not_found or putIfAbsent", async () => {
    const inner = memoryStorage();
    const kinds: FaultKind[] = [];
    const faulty = faultyStorage(inner, { plan: () => kinds.shift() ?? null });
    const store = retryingStorage(faulty, FAST);

    kinds.push("fatal");
    await expect(store.put("a/x", bytes("x"))).rejects.toMatchObject({ status: 403, retryable: false });
    await expect(store.get("a/missing")).rejects.toMatchObject({ kind: "not_found" });
    faulty.resetStats();
    kinds.push("transient");
    await expect(store.putIfAbsent("a/lock", bytes("lease"))).rejects.toMatchObject({ retryable: true });
    expect(faulty.stats.calls, "one call: never retried").toBe(1);
  });

  it("is bounded in attempts and in total time, and the final error says how many tries it took", async () => {
    const faulty = faultyStorage(memoryStorage(), { plan: () => "transient" });
    const err = await retryingStorage(faulty, { ...FAST, attempts: 3 })
      .delete("a/key")
      .catch((e: unknown) => e);
    expect(faulty.stats.calls).toBe(3);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ kind: "unavailable", operation: "delete", key: "a/key" });
    expect((err as Error).message).toMatch(/gave up after 3 tries in \d/);

    // With a total time of 50 ms and hangs of 40 ms, a third try is never started.
    const slow = faultyStorage(memoryStorage(), { plan: () => "hang", hangMs: 40 });
    await expect(retryingStorage(slow, { ...FAST, attempts: 100, maxElapsedMs: 50 }).head("a/key")).rejects.toMatchObject({ kind: "unavailable" });
    expect(slow.stats.calls).toBeLessThanOrEqual(2);
  });

  it("times out a call that never answers: unavailable, retryable, saying which driver and how long it waited; retries stay within the total", async () => {
    const hanging = hangingStorage();
    const store = retryingStorage(hanging, { ...FAST, timeoutMs: 100, maxElapsedMs: 250 });
    const err = await store.put("chunks/ab/abcdef", bytes("x")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ driver: "hang", operation: "put", key: "chunks/ab/abcdef", kind: "unavailable" });
    // The upload's allowance for its bytes (1 byte at 256 KiB/s) rounds to the timeout itself.
    expect((err as Error).message).toMatch(/^hang: put chunks\/ab\/abcdef did not answer within 100ms \(gave up after [23] tries in \d+ms\)$/);
    expect(hanging.calls).toBeLessThanOrEqual(3);

    // A single try (putIfAbsent) times out the same way, retryable for the caller to decide.
    await expect(retryingStorage(hangingStorage(), { timeoutMs: 100 }).putIfAbsent("locks/x", bytes("x"))).rejects.toMatchObject({
      retryable: true,
      message: "hang: putIfAbsent locks/x did not answer within 100ms",
    });
    // A listing that stalls, too.
    const drain = async () => {
      for await (const _ of retryingStorage(hangingStorage(), { timeoutMs: 100, attempts: 1 }).list("snapshots/")) {
        // nothing arrives
      }
    };
    await expect(drain()).rejects.toThrow(/hang: list snapshots\/ did not answer within 100ms/);
  });

  it("a get whose body stalls fails on the stall, not on the total time; a body that breaks is read again and continued", async () => {
    const slowBody: Storage = {
      ...memoryStorage(),
      driver: "slow",
      async get() {
        let n = 0;
        return new ReadableStream<Uint8Array>({
          async pull(controller) {
            // Ten pieces 50 ms apart (500 ms in all, past the 150 ms timeout), then a stall.
            if (n++ < 10) {
              await new Promise((resolve) => setTimeout(resolve, 50));
              controller.enqueue(bytes("x"));
            } else await new Promise(() => {});
          },
        });
      },
    };
    const body = await retryingStorage(slowBody, { timeoutMs: 150, attempts: 1 }).get("big/object");
    const reader = body.getReader();
    let got = 0;
    const failure = await (async () => {
      for (;;) {
        const { value } = await reader.read();
        got += value!.byteLength;
      }
    })().catch((e: unknown) => e);
    expect(got).toBe(10);
    expect(failure).toMatchObject({ message: "slow: get big/object did not answer within 150ms" });

    // A body that breaks half way (a reset connection) is resumed: the caller sees it whole.
    const inner = memoryStorage();
    const content = new Uint8Array(10_000).map((_, i) => i % 251);
    await inner.put("chunks/whole", content);
    const faulty = faultyStorage(inner, { plan: ({ n }) => (n === 0 ? "get-stream-error" : null) });
    const { lines, log } = logged();
    expect(await readAll(await retryingStorage(faulty, { ...FAST, log }).get("chunks/whole"))).toEqual(content);
    expect(faulty.stats.calls).toBe(2);
    expect(lines[0]).toMatchObject({ level: "warn", fields: { operation: "get", key: "chunks/whole", attempt: 1 } });
  });

  it("a listing that breaks is listed again, each key yielded once", async () => {
    const inner = memoryStorage();
    for (let i = 0; i < 10; i++) await inner.put(`k/${i}`, bytes(String(i)));
    let lists = 0;
    const breaking: Storage = {
      ...inner,
      async *list(prefix) {
        lists++;
        let n = 0;
        for await (const info of inner.list(prefix)) {
          if (lists === 1 && n++ === 4) throw new StorageError("memory: list failed: HTTP 503 (injected)", { driver: "memory", operation: "list", key: prefix, kind: "unavailable", retryable: true });
          yield info;
        }
      },
    };
    const keys: string[] = [];
    for await (const info of retryingStorage(breaking, FAST).list("k/")) keys.push(info.key);
    expect(keys.sort()).toEqual(Array.from({ length: 10 }, (_, i) => `k/${i}`).sort());
    expect(lists).toBe(2);
  });
});
