import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isNotFound, StorageError } from "../../lib/storage/errors.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";

export interface ConformanceTarget {
  storage: Storage;
  cleanup?: () => Promise<void>;
}

export interface ConformanceOptions {
  /** Shown in test names. */
  name: string;
  /** Called once before the suite; returns a fresh, empty store. */
  create: () => Promise<ConformanceTarget>;
  /**
   * Capabilities the local test server lacks although the driver relies on them against
   * the real service (s3rver ignores `If-None-Match`). Each is printed and its tests are
   * reported as skipped, never as passed.
   */
  serverLacks?: { atomicPutIfAbsent?: string };
  /** Size of the streamed large object; 64 MiB unless a test says otherwise. */
  largeBytes?: number;
  /** How many keys the list test writes; 2,500 unless a test says otherwise. */
  listKeys?: number;
}

const MiB = 1024 * 1024;
const text = (s: string) => new TextEncoder().encode(s);
const getBytes = async (storage: Storage, key: string) => readAll(await storage.get(key));

/** Deterministic bytes (xorshift), so a 64 MiB object needs no 64 MiB buffer. */
function pseudoRandomStream(totalBytes: number, seed: number, hash: ReturnType<typeof createHash>): ReadableStream<Uint8Array> {
  let x = seed >>> 0 || 1;
  let sent = 0;
  let piece = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= totalBytes) return controller.close();
      // Uneven piece sizes, so drivers cannot rely on aligned writes.
      const size = Math.min(totalBytes - sent, piece++ % 3 === 0 ? 1_000_003 : 65_537);
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        bytes[i] = x & 0xff;
      }
      hash.update(bytes);
      sent += size;
      controller.enqueue(bytes);
    },
  });
}

/** A body that yields `okBytes` and then fails, like a source that dies mid-upload. */
export function failingStream(okBytes: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= okBytes) return controller.error(new Error("injected failure mid-stream"));
      const size = Math.min(MiB, okBytes - sent);
      controller.enqueue(new Uint8Array(size).fill(7));
      sent += size;
    },
  });
}

async function hashStream(stream: ReadableStream<Uint8Array>): Promise<{ hex: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    bytes += chunk.byteLength;
  }
  return { hex: hash.digest("hex"), bytes };
}

async function expectNotFound(promise: Promise<unknown>): Promise<void> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, "expected a typed not-found").toBeInstanceOf(StorageError);
  expect(isNotFound(err)).toBe(true);
}

async function inBatches<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** The suite every storage driver runs. */
export function storageConformance(options: ConformanceOptions): void {
  const largeBytes = options.largeBytes ?? 64 * MiB;
  const listKeys = options.listKeys ?? 2500;

  describe(`storage conformance: ${options.name}`, () => {
    let target: ConformanceTarget;
    let storage: Storage;

    beforeAll(async () => {
      target = await options.create();
      storage = target.storage;
    }, 60_000);
    afterAll(async () => {
      await target?.cleanup?.();
    }, 60_000);

    it("round-trips empty, small and all-256-byte-values objects, as bytes and as streams", async () => {
      const binary = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
      const cases: [string, Uint8Array][] = [
        ["rt/empty", new Uint8Array(0)],
        ["rt/small", text("hello, chroma")],
        ["rt/binary", binary],
      ];
      for (const [key, bytes] of cases) {
        await storage.put(key, bytes);
        expect(await getBytes(storage, key)).toEqual(bytes);
        expect((await storage.head(key)).size).toBe(bytes.byteLength);
        const streamed = `${key}-streamed`;
        await storage.put(streamed, new Blob([bytes as Uint8Array<ArrayBuffer>]).stream());
        expect(await getBytes(storage, streamed)).toEqual(bytes);
        expect((await storage.head(streamed)).size).toBe(bytes.byteLength);
      }
    });

    it(`streams a large object of unknown length (${Math.round(largeBytes / MiB)} MiB) both ways`, async () => {
      const sent = createHash("sha256");
      await storage.put("large/object", pseudoRandomStream(largeBytes, 42, sent));
      const received = await hashStream(await storage.get("large/object"));
      expect(received.bytes).toBe(largeBytes);
      expect(received.hex).toBe(sent.digest("hex"));
      const stat = await storage.head("large/object");
      expect(stat.size).toBe(largeBytes);
      if (stat.lastModified) expect(Math.abs(stat.lastModified.getTime() - Date.now())).toBeLessThan(10 * 60_000);
      await storage.delete("large/object");
    }, 300_000);

    it(`lists ${listKeys} keys by prefix, each exactly once, across pages`, async () => {
      const keys = Array.from({ length: listKeys }, (_, i) => `list/${String(i).padStart(5, "0")}-${(i * 7919) % 1000}`);
      await inBatches(keys, 16, (key) => storage.put(key, text(key)));
      // Neighbours that share the string prefix but not the folder must not leak in.
      await storage.put("listing/other", text("x"));
      await storage.put("lis", text("x"));
      const seen: string[] = [];
      for await (const info of storage.list("list/")) {
        seen.push(info.key);
        if (info.size !== undefined) expect(info.size).toBe(info.key.length);
      }
      expect(seen.length).toBe(keys.length);
      expect(new Set(seen).size).toBe(keys.length);
      expect([...seen].sort()).toEqual([...keys].sort());
      const partial: string[] = [];
      for await (const info of storage.list("list/0001")) partial.push(info.key);
      expect(partial.sort()).toEqual(keys.filter((k) => k.startsWith("list/0001")).sort());
      const everything = new Set<string>();
      for await (const info of storage.list("")) everything.add(info.key);
      expect(everything.has("listing/other")).toBe(true);
      expect(everything.has("lis")).toBe(true);
      expect(everything.has(keys[0]!)).toBe(true);
    }, 300_000);

    it("overwrites an existing object", async () => {
      await storage.put("ow/key", text("first version, longer"));
      await storage.put("ow/key", text("second"));
      expect(new TextDecoder().decode(await getBytes(storage, "ow/key"))).toBe("second");
      expect((await storage.head("ow/key")).size).toBe(6);
    });

    it("deletes idempotently, and a deleted key is not found", async () => {
      await storage.put("del/key", text("x"));
      await storage.delete("del/key");
      await storage.delete("del/key");
      await storage.delete("del/never-existed");
      await expectNotFound(storage.get("del/key"));
      await expectNotFound(storage.head("del/key"));
    });

    it("answers a missing key with a typed not-found from get and head", async () => {
      await expectNotFound(storage.get("missing/nothing-here"));
      await expectNotFound(storage.head("missing/nothing-here"));
    });

    it("keeps unicode and spaces in keys", async () => {
      const key = "unicode/ünï cödé 日本語/file name (1).bin";
      await storage.put(key, text("unicode"));
      expect(new TextDecoder().decode(await getBytes(storage, key))).toBe("unicode");
      const listed: string[] = [];
      for await (const info of storage.list("unicode/")) listed.push(info.key);
      expect(listed).toEqual([key]);
    });

    it("rejects unsafe keys with a clear invalid_key error", async () => {
      for (const key of ["../escape", "a/../../b", "/absolute", "back\\slash", "nul\0byte", "a//b", "trailing/", "", "./a"]) {
        const err = await storage.put(key, text("x")).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err, `key ${JSON.stringify(key)}`).toBeInstanceOf(StorageError);
        expect((err as StorageError).kind).toBe("invalid_key");
        expect((err as StorageError).message).toMatch(/invalid key/);
      }
    });

    it("leaves nothing under the key when the body stream fails mid-upload", async () => {
      const small = await storage.put("fail/new", failingStream(MiB)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(small).toBeInstanceOf(Error);
      await expectNotFound(storage.head("fail/new"));
      // Large enough for multipart drivers to have uploaded parts before the failure.
      await storage.put("fail/existing", text("the old object"));
      const large = await storage.put("fail/existing", failingStream(12 * MiB)).then(
        () => null,
        (e: unknown) => e,
      );
      expect(large).toBeInstanceOf(Error);
      expect(new TextDecoder().decode(await getBytes(storage, "fail/existing"))).toBe("the old object");
      const leftovers: string[] = [];
      for await (const info of storage.list("fail/")) leftovers.push(info.key);
      expect(leftovers).toEqual(["fail/existing"]);
    }, 120_000);

    const lacks = options.serverLacks?.atomicPutIfAbsent;
    if (lacks) console.warn(`[conformance ${options.name}] skipped putIfAbsent tests: ${lacks}`);
    const putIfAbsentTest = lacks ? it.skip : it;

    putIfAbsentTest("putIfAbsent writes once and never overwrites", async () => {
      expect(await storage.putIfAbsent("pia/single", text("first"))).toBe(true);
      expect(await storage.putIfAbsent("pia/single", text("second"))).toBe(false);
      expect(new TextDecoder().decode(await getBytes(storage, "pia/single"))).toBe("first");
    });

    const atomicTest = lacks ? it.skip : it;
    atomicTest("putIfAbsent has exactly one winner among 20 concurrent callers (drivers that declare it atomic)", async (ctx) => {
      if (!storage.capabilities.atomicPutIfAbsent) {
        console.warn(`[conformance ${options.name}] ${storage.driver} declares putIfAbsent non-atomic: race test skipped`);
        ctx.skip();
      }
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => storage.putIfAbsent("pia/race", text(`caller-${i}`))),
      );
      const winners = results.flatMap((won, i) => (won ? [i] : []));
      expect(winners.length).toBe(1);
      expect(new TextDecoder().decode(await getBytes(storage, "pia/race"))).toBe(`caller-${winners[0]}`);
    });
  });
}
