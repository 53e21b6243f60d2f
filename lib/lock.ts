import { ConflictError, BackupError } from "./errors.js";
import { isNotFound } from "./storage/errors.js";
import { isTransient, retryStorage } from "./storage/retry.js";
import { readAll } from "./storage/streams.js";
import type { Storage } from "./storage/types.js";

export interface LeaseInfo {
  holder: string;
  operation: string;
  acquiredAt: string;
  expiresAt: string;
}

export interface LockOptions {
  /** A lease not renewed for this long is considered abandoned (its holder died). */
  ttlMs?: number;
  now?: () => number;
}

/**
 * One backup or prune at a time per store, as a lease in the store itself, so it holds
 * across instances and serverless invocations.
 *
 * Leases are numbered: `locks/<name>/<epoch>.json`. Taking the lock means creating the
 * next epoch with `putIfAbsent`, which has exactly one winner where the backend is
 * atomic (and is confirmed by reading back where it is not). A holder renews its lease
 * while it works; a lease past its expiry is taken over by creating the next epoch, so
 * two callers can never both take over the same dead lease.
 */
export class StoreLock {
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly storage: Storage,
    private readonly name = "maintenance",
    options: LockOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  private key(epoch: number): string {
    return `locks/${this.name}/${String(epoch).padStart(12, "0")}.json`;
  }

  private async epochs(): Promise<number[]> {
    const out = await retryStorage(async () => {
      const found: number[] = [];
      for await (const info of this.storage.list(`locks/${this.name}/`)) {
        const match = /\/(\d{12})\.json$/.exec(info.key);
        if (match) found.push(Number(match[1]));
      }
      return found;
    });
    return out.sort((a, b) => a - b);
  }

  /** The lease of `epoch`; null when it is gone, or unreadable three times (a torn read must not free a held lock). */
  private async read(epoch: number): Promise<LeaseInfo | null> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const bytes = await retryStorage(async () => readAll(await this.storage.get(this.key(epoch)), 64 * 1024));
        const parsed = JSON.parse(new TextDecoder().decode(bytes)) as LeaseInfo | null;
        if (typeof parsed?.holder === "string" && typeof parsed.expiresAt === "string") return parsed;
      } catch (err) {
        if (isNotFound(err)) return null;
        if (!(err instanceof SyntaxError)) throw err;
      }
    }
    return null;
  }

  /** The live lease, or null when the lock is free. */
  async current(): Promise<LeaseInfo | null> {
    const epochs = await this.epochs();
    const top = epochs.at(-1);
    if (top === undefined) return null;
    const lease = await this.read(top);
    return lease && Date.parse(lease.expiresAt) > this.now() ? lease : null;
  }

  /** Takes the lock or throws ConflictError naming the holder and when its lease expires. */
  async acquire(operation: string, holder: string): Promise<Lease> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const epochs = await this.epochs();
      const top = epochs.at(-1) ?? 0;
      if (top > 0) {
        const lease = await this.read(top);
        if (lease && Date.parse(lease.expiresAt) > this.now()) {
          throw new ConflictError(`another ${lease.operation} is running (held by ${lease.holder} until ${lease.expiresAt})`, {
            holder: lease.holder,
            operation: lease.operation,
            expiresAt: lease.expiresAt,
          });
        }
      }
      const epoch = top + 1;
      const info = this.lease(operation, holder, this.now());
      let won: boolean;
      try {
        won = await this.storage.putIfAbsent(this.key(epoch), encode(info));
      } catch (err) {
        if (!isTransient(err)) throw err;
        // The write may or may not have landed: the lease is ours if it reads back as ours,
        // and if nothing is there the next attempt tries again.
        const back = await this.read(epoch);
        won = back?.holder === holder && back.acquiredAt === info.acquiredAt;
      }
      if (!won) continue;
      if (!this.storage.capabilities.atomicPutIfAbsent) {
        // Best effort where the backend cannot create-if-absent atomically.
        const back = await this.read(epoch);
        if (back?.holder !== holder) continue;
      }
      for (const old of epochs) await this.storage.delete(this.key(old)).catch(() => {});
      return new Lease(this, epoch, info);
    }
    throw new ConflictError("could not take the lock: other callers keep taking it", { holder: null });
  }

  lease(operation: string, holder: string, at: number): LeaseInfo {
    return { holder, operation, acquiredAt: new Date(at).toISOString(), expiresAt: new Date(at + this.ttlMs).toISOString() };
  }

  /** @internal used by Lease */
  async renew(epoch: number, info: LeaseInfo): Promise<LeaseInfo | null> {
    const epochs = await this.epochs();
    if (epochs.some((e) => e > epoch)) return null; // taken over: we were presumed dead
    const renewed = { ...info, expiresAt: new Date(this.now() + this.ttlMs).toISOString() };
    await this.storage.put(this.key(epoch), encode(renewed));
    return renewed;
  }

  /** @internal used by Lease */
  async drop(epoch: number): Promise<void> {
    // A lease left behind blocks every backup and prune until it expires: worth a retry.
    await retryStorage(() => this.storage.delete(this.key(epoch)));
  }

  get renewEveryMs(): number {
    return Math.max(50, Math.floor(this.ttlMs / 3));
  }
}

function encode(info: LeaseInfo): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(info));
}

/** A held lock. Renews itself until released; `assertHeld()` fails once it was lost. */
export class Lease {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lost: string | null = null;
  private renewing: Promise<void> = Promise.resolve();
  private renewalInFlight = false;

  constructor(
    private readonly lock: StoreLock,
    private readonly epoch: number,
    public info: LeaseInfo,
  ) {
    this.timer = setInterval(() => {
      // One renewal at a time: release() awaits only `renewing`, so an older, slower one
      // could otherwise land after the lease was dropped and bring it back.
      if (this.renewalInFlight) return;
      this.renewalInFlight = true;
      this.renewing = this.renew().finally(() => {
        this.renewalInFlight = false;
      });
    }, lock.renewEveryMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async renew(): Promise<void> {
    try {
      const renewed = await this.lock.renew(this.epoch, this.info);
      if (renewed) this.info = renewed;
      else this.lost = "another caller took the lock over after this lease expired";
    } catch (err) {
      // A failed renewal is not yet a lost lock: the lease is still valid until it expires.
      if (Date.parse(this.info.expiresAt) <= Date.now()) this.lost = `the lease expired and could not be renewed: ${(err as Error).message}`;
    }
  }

  /** Throws when the lock was lost, so work done without it is never committed. */
  async assertHeld(): Promise<void> {
    await this.renewing;
    if (this.lost) throw new BackupError(`lost the lock: ${this.lost}`);
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.renewing;
    if (!this.lost) await this.lock.drop(this.epoch).catch(() => {});
  }
}
