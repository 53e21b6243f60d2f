/**
 * StoreLock: one backup or prune at a time per store, as a lease in the store itself.
 * Run over the memory and fs drivers; every caller gets its own StoreLock instance, as
 * separate service instances would.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { BackupError, ConflictError } from "../../lib/errors.js";
import { StoreLock, type Lease, type LeaseInfo } from "../../lib/lock.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { StorageError } from "../../lib/storage/errors.js";
import type { Storage } from "../../lib/storage/types.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const drivers: Record<string, () => Promise<Storage>> = {
  memory: async () => memoryStorage(),
  fs: async () => {
    const root = await mkdtemp(join(tmpdir(), "lock-"));
    onTestFinished(() => rm(root, { recursive: true, force: true }));
    return fsStorage(root);
  },
};

async function keys(storage: Storage): Promise<string[]> {
  const out: string[] = [];
  for await (const info of storage.list("locks/")) out.push(info.key);
  return out.sort();
}

/** Settles every acquire; returns the leases won and the errors of the rest. */
async function race(attempts: Promise<Lease>[]): Promise<{ won: Lease[]; lost: unknown[] }> {
  const settled = await Promise.allSettled(attempts);
  const won = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const lost = settled.flatMap((s) => (s.status === "rejected" ? [s.reason as unknown] : []));
  onTestFinished(async () => {
    for (const lease of won) await lease.release();
  });
  return { won, lost };
}

/** A lease left behind by a holder that died: nobody renews it and it expired long ago. */
async function deadLease(storage: Storage, epoch: number, holder = "crashed-instance"): Promise<LeaseInfo> {
  const at = Date.now() - 120_000;
  const info: LeaseInfo = { holder, operation: "backup", acquiredAt: new Date(at).toISOString(), expiresAt: new Date(at + 60_000).toISOString() };
  expect(await storage.putIfAbsent(`locks/maintenance/${String(epoch).padStart(12, "0")}.json`, new TextEncoder().encode(JSON.stringify(info)))).toBe(true);
  return info;
}

describe.each(Object.keys(drivers))("StoreLock over the %s store", (driver) => {
  const store = () => drivers[driver]!();

  it("of 20 concurrent acquires exactly one gets the lease; the others get a conflict naming it", async () => {
    const storage = await store();
    const { won, lost } = await race(Array.from({ length: 20 }, (_, i) => new StoreLock(storage).acquire("backup", `caller-${i}`)));
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(19);
    const winner = won[0]!.info;
    for (const err of lost) {
      expect(err).toBeInstanceOf(ConflictError);
      expect((err as ConflictError).details).toEqual({ holder: winner.holder, operation: "backup", expiresAt: expect.any(String) });
      expect((err as ConflictError).message).toContain(winner.holder);
    }
    expect(await new StoreLock(storage).current()).toMatchObject({ holder: winner.holder, operation: "backup" });
    expect(await keys(storage)).toHaveLength(1);
  });

  it("release frees the lock for the next caller and leaves no lease behind", async () => {
    const storage = await store();
    const lock = new StoreLock(storage);
    const first = await lock.acquire("prune", "a");
    await expect(new StoreLock(storage).acquire("backup", "b")).rejects.toBeInstanceOf(ConflictError);
    await first.release();
    expect(await lock.current()).toBeNull();
    expect(await keys(storage)).toEqual([]);
    const second = await new StoreLock(storage).acquire("backup", "b");
    expect(await lock.current()).toMatchObject({ holder: "b", operation: "backup" });
    await second.release();
    expect(await keys(storage)).toEqual([]);
    // Released leases can be taken again and again.
    for (let i = 0; i < 5; i++) await (await lock.acquire("backup", `again-${i}`)).release();
    expect(await lock.current()).toBeNull();
  });

  it("a dead holder's expired lease is taken over by exactly one of several concurrent callers", async () => {
    const storage = await store();
    await deadLease(storage, 7);
    expect(await new StoreLock(storage).current()).toBeNull(); // expired: the lock is free
    const { won, lost } = await race(Array.from({ length: 10 }, (_, i) => new StoreLock(storage).acquire("backup", `taker-${i}`)));
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(9);
    for (const err of lost) expect(err).toBeInstanceOf(ConflictError);
    const current = await new StoreLock(storage).current();
    expect(current?.holder).toBe(won[0]!.info.holder);
    // The next epoch, and the dead lease is cleaned up.
    expect(await keys(storage)).toEqual(["locks/maintenance/000000000008.json"]);
  });

  it("a lease past its ttl (seen through an advanced `now`) is taken over by exactly one caller, and the old holder learns it lost it", async () => {
    const storage = await store();
    const ttlMs = 300;
    const old = await new StoreLock(storage, "maintenance", { ttlMs }).acquire("backup", "slow-holder");
    onTestFinished(() => old.release());
    await old.assertHeld();
    // Callers whose clock is well past the old lease's expiry, as if it had not been renewed.
    const later = () => Date.now() + 10 * ttlMs;
    await expect(new StoreLock(storage, "maintenance", { ttlMs }).acquire("backup", "not-yet")).rejects.toBeInstanceOf(ConflictError);
    const { won, lost } = await race(Array.from({ length: 8 }, (_, i) => new StoreLock(storage, "maintenance", { ttlMs, now: later }).acquire("prune", `taker-${i}`)));
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(7);
    for (const err of lost) expect(err).toBeInstanceOf(ConflictError);

    // The old holder's next renewal sees the takeover; work it then tries to commit is refused.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (await old.assertHeld().then(() => true, () => false))) await sleep(20);
    await expect(old.assertHeld()).rejects.toThrow(BackupError);
    await expect(old.assertHeld()).rejects.toThrow(/lost the lock/);
    // Releasing the lost lease does not free the new holder's lock.
    await old.release();
    expect(await new StoreLock(storage, "maintenance", { ttlMs, now: later }).current()).toMatchObject({ holder: won[0]!.info.holder, operation: "prune" });
    await won[0]!.assertHeld();
  });

  it("a lease renews itself while held: still held well past its ttl, and current() shows it", async () => {
    const storage = await store();
    const ttlMs = 400;
    const lock = new StoreLock(storage, "maintenance", { ttlMs });
    const lease = await lock.acquire("backup", "long-backup");
    const firstExpiry = lease.info.expiresAt;
    try {
      for (let i = 0; i < 3; i++) {
        await sleep(ttlMs);
        const current = await lock.current();
        expect(current, `after ${(i + 1) * ttlMs} ms`).toMatchObject({ holder: "long-backup", operation: "backup", acquiredAt: lease.info.acquiredAt });
        expect(Date.parse(current!.expiresAt)).toBeGreaterThan(Date.now());
        await expect(new StoreLock(storage, "maintenance", { ttlMs }).acquire("prune", "intruder")).rejects.toBeInstanceOf(ConflictError);
      }
      expect(Date.parse(lease.info.expiresAt)).toBeGreaterThan(Date.parse(firstExpiry));
      await lease.assertHeld();
    } finally {
      await lease.release();
    }
    expect(await lock.current()).toBeNull();
    // No renewal in flight brings the released lease back.
    await sleep(ttlMs);
    expect(await keys(storage)).toEqual([]);
    await (await new StoreLock(storage, "maintenance", { ttlMs }).acquire("prune", "next")).release();
  });

  it("a renewal still in flight when the lease is released cannot bring the lease back", async () => {
    const storage = await store();
    // The store is slow once: the first renewal's write hangs until the test lets it land.
    let gate: (() => void) | null = null;
    let hung = false;
    let renewals = 0;
    const slow: Storage = {
      ...storage,
      async put(key, body) {
        if (key.startsWith("locks/")) {
          renewals++;
          if (!hung) {
            hung = true;
            await new Promise<void>((open) => (gate = open));
          }
        }
        return storage.put(key, body);
      },
    };
    const ttlMs = 300;
    const lock = new StoreLock(slow, "maintenance", { ttlMs });
    const lease = await lock.acquire("backup", "slow-store");
    while (!hung) await sleep(10);
    await sleep(lock.renewEveryMs * 2.5); // long enough for later renewal ticks
    const releasing = lease.release();
    await sleep(20);
    gate!();
    await releasing;
    await sleep(20);
    expect(await keys(storage), `after ${renewals} renewal writes`).toEqual([]);
    expect(await new StoreLock(storage, "maintenance", { ttlMs }).current()).toBeNull();
    await (await new StoreLock(storage, "maintenance", { ttlMs }).acquire("prune", "next")).release();
  });

  it("locks of different names do not exclude each other", async () => {
    const storage = await store();
    const a = await new StoreLock(storage, "maintenance").acquire("backup", "a");
    const b = await new StoreLock(storage, "other").acquire("backup", "b");
    expect((await new StoreLock(storage, "maintenance").current())?.holder).toBe("a");
    expect((await new StoreLock(storage, "other").current())?.holder).toBe("b");
    await a.release();
    await b.release();
  });
});

describe("StoreLock when taking the lease fails transiently", () => {
  const unavailable = () => new StorageError("memory: putIfAbsent failed: HTTP 503 (injected)", { driver: "memory", operation: "putIfAbsent", key: "k", kind: "unavailable", status: 503, retryable: true });
  /** A store whose first putIfAbsent throws a 503, before writing (`landed: false`) or after (`landed: true`). */
  function flaky(landed: boolean): Storage {
    const inner = memoryStorage();
    let failed = false;
    return {
      ...inner,
      list: (prefix) => inner.list(prefix),
      async putIfAbsent(key, body) {
        if (failed) return inner.putIfAbsent(key, body);
        failed = true;
        if (landed) await inner.putIfAbsent(key, body);
        throw unavailable();
      },
    };
  }

  for (const landed of [false, true]) {
    it(`still takes the lock when the write ${landed ? "landed but the answer was lost" : "did not land"}, and holds exactly one lease`, async () => {
      const storage = flaky(landed);
      const lease = await new StoreLock(storage, "maintenance").acquire("backup", "me");
      expect(lease).toBeDefined();
      expect(await keys(storage)).toHaveLength(1);
      await expect(new StoreLock(storage, "maintenance").acquire("prune", "other")).rejects.toBeInstanceOf(ConflictError);
      await lease.release();
      expect(await keys(storage)).toEqual([]);
    });
  }

  it("a fatal error is not retried", async () => {
    const inner = memoryStorage();
    const storage: Storage = {
      ...inner,
      list: (prefix) => inner.list(prefix),
      putIfAbsent: async () => {
        throw new StorageError("memory: putIfAbsent failed: HTTP 403", { driver: "memory", operation: "putIfAbsent", key: "k", kind: "failed", status: 403, retryable: false });
      },
    };
    await expect(new StoreLock(storage, "maintenance").acquire("backup", "me")).rejects.toThrow(/403/);
  });
});
