import { ConflictError, BackupError } from "./errors.js";
import { isNotFound } from "./storage/errors.js";
import { formatWait, isTransient } from "./storage/retry.js";
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
  /** How long `release()` waits for the store before it lets the lease expire instead; default 5 s. */
  releaseWaitMs?: number;
}

/**
 * The lease of a running backup or prune was lost: it could not be renewed before it
 * expired (the store hung or failed), or another caller took it over. The operation is
 * abandoned and commits nothing; the API answers 503 storage_unavailable.
 */
export class LeaseLostError extends BackupError {
  override name = "LeaseLostError";
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
  readonly ttlMs: number;
  readonly releaseWaitMs: number;
  private readonly now: () => number;

  constructor(
    private readonly storage: Storage,
    private readonly name = "maintenance",
    options: LockOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 60_000;
    this.releaseWaitMs = options.releaseWaitMs ?? 5000;
    this.now = options.now ?? Date.now;
  }

  private key(epoch: number): string {
    return `locks/${this.name}/${String(epoch).padStart(12, "0")}.json`;
  }

  private async epochs(): Promise<number[]> {
    const found: number[] = [];
    for await (const info of this.storage.list(`locks/${this.name}/`)) {
      const match = /\/(\d{12})\.json$/.exec(info.key);
      if (match) found.push(Number(match[1]));
    }
    return found.sort((a, b) => a - b);
  }

  /** The lease of `epoch`; null when it is gone, or unreadable three times (a torn read must not free a held lock). */
  private async read(epoch: number): Promise<LeaseInfo | null> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const bytes = await readAll(await this.storage.get(this.key(epoch)), 64 * 1024);
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
    // A lease left behind blocks every backup and prune until it expires (the store retries).
    await this.storage.delete(this.key(epoch));
  }

  /** @internal the clock leases are dated with */
  clock(): number {
    return this.now();
  }

  get renewEveryMs(): number {
    return Math.max(50, Math.floor(this.ttlMs / 3));
  }
}

function encode(info: LeaseInfo): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(info));
}

/**
 * A held lock. Renews itself until released. `signal` aborts (with a LeaseLostError) as
 * soon as the lease is lost: taken over, or past its expiry without a renewal (a hung or
 * failing store), so the operation stops early; `assertHeld()` fails from then on.
 */
export class Lease {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lost: LeaseLostError | null = null;
  private renewing: Promise<void> = Promise.resolve();
  private renewalInFlight = false;
  /** When the renewal in flight started. */
  private renewalStartedAt = 0;
  private readonly controller = new AbortController();
  /** When the lease was last written (taken or renewed). */
  private renewedAt = Date.now();

  constructor(
    private readonly lock: StoreLock,
    private readonly epoch: number,
    public info: LeaseInfo,
  ) {
    this.timer = setInterval(() => {
      // A renewal that hangs must not keep an expired lease looking held. (A process that
      // was merely starved of CPU finds its renewal done, or quick, once it runs again.)
      if (this.expired() && this.renewalHung()) this.lose(this.expiredMessage(this.lastError));
      if (this.lost) return;
      // One renewal at a time: release() awaits only `renewing`, so an older, slower one
      // could otherwise land after the lease was dropped and bring it back.
      if (this.renewalInFlight) return;
      this.renewalInFlight = true;
      this.renewalStartedAt = Date.now();
      this.renewing = this.renew().finally(() => {
        this.renewalInFlight = false;
      });
    }, lock.renewEveryMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private lastError: string | null = null;

  /** Past its expiry, by the lock's clock (the one the expiry was computed with). */
  private expired(): boolean {
    return Date.parse(this.info.expiresAt) <= this.lock.clock();
  }

  /** A renewal has been waiting on the store longer than the lease lasts (at least 5 s). */
  private renewalHung(): boolean {
    return this.renewalInFlight && Date.now() - this.renewalStartedAt > Math.max(this.lock.ttlMs, 5000);
  }

  /** Aborts when the lease is lost; its reason is the LeaseLostError. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private expiredMessage(why: string | null): string {
    return `the lock lease could not be renewed for ${formatWait(Date.now() - this.renewedAt)}${why ? ` (${why})` : ""}: the operation was abandoned, nothing was committed`;
  }

  private lose(message: string): void {
    if (this.lost) return;
    this.lost = new LeaseLostError(message, { holder: this.info.holder, operation: this.info.operation, expiresAt: this.info.expiresAt });
    clearInterval(this.timer);
    this.controller.abort(this.lost);
  }

  private async renew(): Promise<void> {
    try {
      const renewed = await this.lock.renew(this.epoch, this.info);
      if (this.lost) return;
      if (renewed) {
        this.info = renewed;
        this.renewedAt = Date.now();
        this.lastError = null;
      } else this.lose("lost the lock: another caller took it over after this lease expired: the operation was abandoned, nothing was committed");
    } catch (err) {
      // A failed renewal is not yet a lost lock: the lease is still valid until it expires.
      this.lastError = (err as Error).message;
      if (this.expired()) this.lose(this.expiredMessage(this.lastError));
    }
  }

  /** Throws when the lock was lost, so work done without it is never committed. */
  async assertHeld(): Promise<void> {
    if (!this.lost && this.expired() && !this.renewalInFlight) {
      // Expired with no renewal under way (the process was starved): renew now, to learn whether it was taken over.
      this.renewalInFlight = true;
      this.renewalStartedAt = Date.now();
      this.renewing = this.renew().finally(() => {
        this.renewalInFlight = false;
      });
    }
    if (!this.lost) {
      // A renewal in flight may be about to find the lease taken over; a hung one is not waited for long.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.renewing, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.lock.releaseWaitMs)))]);
      clearTimeout(timer);
    }
    if (this.expired()) this.lose(this.expiredMessage(this.lastError));
    if (this.lost) throw this.lost;
  }

  /**
   * Stops renewing and deletes the lease. Bounded: when the store does not answer within
   * `releaseWaitMs`, the delete goes on in the background and the lease expires anyway.
   */
  async release(): Promise<void> {
    clearInterval(this.timer);
    if (this.lost) return;
    const drop = this.renewing.then(() => (this.lost ? undefined : this.lock.drop(this.epoch))).catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([drop, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.lock.releaseWaitMs)))]);
    clearTimeout(timer);
  }
}
