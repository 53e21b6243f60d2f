import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isNotFound, StorageError } from "../../lib/storage/errors.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";

export interface ConformanceTarget {
  storage: Storage;
  cleanup?: () => Promise<void>;
}

/** A store whose writes meet a fault; reads through it are unaffected. */
export interface FaultTarget {
  storage: Storage;
  /** The error kind every faulty write must fail with (`full` for a full disk or quota); any StorageError when absent. */
  kind?: StorageError["kind"];
  cleanup?: () => Promise<void>;
}

/**
 * Write faults, injected where each driver meets them for real: a small tmpfs for fs, a
 * quota for memory, a transport that alters the request body for the network drivers.
 * Each resolves a reason string when the fault cannot be set up here (printed, then skipped).
 */
export interface ConformanceFaults {
  /**
   * The medium takes fewer bytes than a write sends, about `acceptBytes`: a filesystem
   * that fills up (on tmpfs a write then resolves short, without an error), a quota, a
   * transport that delivers a truncated body as if whole.
   */
  shortWrite(acceptBytes: number): Promise<FaultTarget | string>;
  /** The write fails half way: the disk fills mid-write, the connection is cut after `afterBytes` of a body. */
  cutWrite(afterBytes: number): Promise<FaultTarget | string>;
}

export interface ConformanceOptions {
  /** Shown in test names. */
  name: string;
  /** Called once before the suite; returns a fresh, empty store. */
  create: () => Promise<ConformanceTarget>;
  /**
   * How this target injects write faults (see ConformanceFaults). A target without them
   * says where its fault tests run instead; that is printed, as is a target with neither.
   */
  faults?: ConformanceFaults | { elsewhere: string };
  /** Size of the large object (read back as a stream); 64 MiB unless a test says otherwise. */
  largeBytes?: number;
  /** How many keys the list test writes; 2,500 unless a test says otherwise. */
  listKeys?: number;
}

const MiB = 1024 * 1024;
const text = (s: string) => new TextEncoder().encode(s);
const getBytes = async (storage: Storage, key: string) => readAll(await storage.get(key));

/** Deterministic bytes (xorshift). */
function pseudoRandomBytes(totalBytes: number, seed: number): Uint8Array {
  let x = seed >>> 0 || 1;
  const bytes = new Uint8Array(totalBytes);
  for (let i = 0; i < totalBytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
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

    it("round-trips empty, small and all-256-byte-values objects", async () => {
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
      }
    });

    it(`round-trips a large object (${Math.round(largeBytes / MiB)} MiB), read back as a stream`, async () => {
      const bytes = pseudoRandomBytes(largeBytes, 42);
      const sent = createHash("sha256").update(bytes).digest("hex");
      await storage.put("large/object", bytes);
      const received = await hashStream(await storage.get("large/object"));
      expect(received.bytes).toBe(largeBytes);
      expect(received.hex).toBe(sent);
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

    it("putIfAbsent writes once and never overwrites", async () => {
      expect(await storage.putIfAbsent("pia/single", text("first"))).toBe(true);
      expect(await storage.putIfAbsent("pia/single", text("second"))).toBe(false);
      expect(new TextDecoder().decode(await getBytes(storage, "pia/single"))).toBe("first");
    });

    it("putIfAbsent has exactly one winner among 20 concurrent callers (drivers that declare it atomic)", async (ctx) => {
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

  if (!options.faults) console.warn(`[conformance ${options.name}] no write-fault hook in this file: its write-fault tests run elsewhere through storageFaultConformance (r2: test/workers/r2-driver.test.ts)`);
  else if ("elsewhere" in options.faults) console.warn(`[conformance ${options.name}] write-fault tests: ${options.faults.elsewhere}`);
  else storageFaultConformance(options.name, options.faults);
}

/** `length` deterministic bytes (byte i is (start + i) mod 251). */
function pattern(length: number, start = 0): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (start + i) % 251;
  return bytes;
}

/**
 * The write-fault half of the suite, for every driver (r2 runs it from
 * test/workers/r2-driver.test.ts): a write the medium takes only in part, and one cut half
 * way, must fail with a StorageError and leave nothing under the key (an older object
 * stays whole), for put and putIfAbsent. `keyPrefix` keeps its
 * keys apart from a shared bucket's other users.
 */
export function storageFaultConformance(name: string, faults: ConformanceFaults, keyPrefix = "fault/"): void {
  const cases: [string, (arg: number) => Promise<FaultTarget | string>, number][] = [
    ["a write the medium takes only in part (a full disk, a truncated body)", (n) => faults.shortWrite(n), 256 * 1024],
    ["a write that fails half way (the disk fills mid-write, the connection is cut)", (n) => faults.cutWrite(n), 1024 * 1024],
  ];
  describe(`storage write faults: ${name}`, () => {
    for (const [title, make, limit] of cases) {
      it(`${title} fails, and leaves nothing under the key; an older object stays whole`, async (ctx) => {
        const target = await make(limit);
        if (typeof target === "string") {
          console.warn(`[conformance ${name}] skipped "${title}": ${target}`);
          ctx.skip();
          return;
        }
        const { storage } = target;
        const at = (k: string) => `${keyPrefix}${k}`;
        try {
          const old = text("the old object");
          await storage.put(at("old"), old);
          const attempts: [string, () => Promise<unknown>][] = [
            ["put bytes", () => storage.put(at("new"), pattern(3 * limit))],
            ["put bytes over an older object", () => storage.put(at("old"), pattern(3 * limit))],
            ["putIfAbsent bytes", () => storage.putIfAbsent(at("absent"), pattern(3 * limit))],
          ];
          for (const [what, attempt] of attempts) {
            const err = await attempt().then(
              () => null,
              (e: unknown) => e,
            );
            expect(err, `${what}: expected a StorageError`).toBeInstanceOf(StorageError);
            if (target.kind) expect((err as StorageError).kind, `${what}: ${(err as Error).message}`).toBe(target.kind);
            if (target.kind === "full") expect((err as Error).message, what).toMatch(/\d+ bytes/);
          }
          for (const k of ["new", "absent"]) await expectNotFound(storage.head(at(k)));
          expect(await getBytes(storage, at("old"))).toEqual(old);
          const left: string[] = [];
          for await (const info of storage.list(keyPrefix)) left.push(info.key);
          expect(left).toEqual([at("old")]);
        } finally {
          await target.cleanup?.();
        }
      }, 120_000);
    }
  });
}
