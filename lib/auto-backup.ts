import { ConflictError, RestorePendingError } from "./errors.js";
import { errorFields, jsonLogger, type Logger } from "./log.js";
import type { BackupOutcome, BackupScheduler, BackupService } from "./service.js";

export interface AutoBackupOptions {
  service: BackupService;
  /** BACKUP_INTERVAL in seconds; null: no interval (schedule() and backupOnStop() still work). */
  intervalSeconds: number | null;
  /**
   * A monotonic count of writes to Chroma (the gate proxy's). Without it (a Chroma the
   * service does not front) every interval runs a backup, and its unchanged check decides.
   */
  changeSignal?: () => number;
  log?: Logger;
  /** BACKUP_ON_STOP_TIMEOUT in seconds; 0: no on-stop backup. */
  onStopTimeoutSeconds: number;
  now?: () => Date;
}

export type StopBackupResult =
  | { outcome: "nothing-to-protect" | "disabled" | "unchanged" }
  | { outcome: "committed"; snapshot: string }
  | { outcome: "timeout" | "failed" | "held"; error: string };

/** After an abandoned on-stop backup, how long to let it unwind (release its lock) before answering. */
const UNWIND_MS = 2000;
/** A scheduled backup that met another operation's lock tries again this much later. */
const CONFLICT_RETRY_MS = 60_000;

/**
 * The automatic backups of a Node runtime: at most every interval, and only when Chroma's
 * data changed since it was last protected (an idle Chroma costs no request); one-shot
 * backups the service schedules when an `ifOlderThan` call skipped a change; and the
 * backup of unprotected changes on stop, within a budget. Every backup is `automatic`
 * (held while the startup restore has not succeeded); retention runs after each (the
 * service's backup does it).
 */
export class AutoBackup implements BackupScheduler {
  private readonly service: BackupService;
  private readonly log: Logger;
  private readonly now: () => Date;
  /** The write count when the data was last known to be in a snapshot; undefined: unknown. */
  private protectedCount: number | undefined;
  /** Bumped by every restore: a backup that started before one does not vouch for the data after it. */
  private generation = 0;
  private tick: { at: Date; timer: NodeJS.Timeout } | null = null;
  private oneShot: { at: Date; timer: NodeJS.Timeout } | null = null;
  private running: Promise<unknown> | null = null;
  private detach: (() => void) | null = null;

  constructor(private readonly options: AutoBackupOptions) {
    this.service = options.service;
    this.log = options.log ?? jsonLogger;
    this.now = options.now ?? (() => new Date());
  }

  /** Starts the interval and becomes the service's scheduler and change signal. */
  start(): void {
    if (this.detach) return;
    const unwatch = this.service.watch({
      backupStarting: () => {
        const count = this.options.changeSignal?.();
        const generation = this.generation;
        return (outcome) => {
          const protects = outcome !== null && (!outcome.skipped || outcome.reason === "unchanged");
          if (protects && count !== undefined && generation === this.generation) this.protectedCount = Math.max(count, this.protectedCount ?? count);
        };
      },
      restored: () => {
        this.generation++;
        this.protectedCount = undefined;
      },
    });
    this.service.scheduler = this;
    this.service.changeSignal = () => this.changedSinceSnapshot();
    this.detach = () => {
      unwatch();
      if (this.service.scheduler === this) this.service.scheduler = undefined;
      this.service.changeSignal = undefined;
    };
    this.armInterval();
  }

  /** Stops the timers (a backup under way finishes) and lets go of the service. */
  stop(): void {
    if (this.tick) clearTimeout(this.tick.timer);
    if (this.oneShot) clearTimeout(this.oneShot.timer);
    this.tick = this.oneShot = null;
    this.detach?.();
    this.detach = null;
  }

  /**
   * Declares the data as it is now protected (e.g. the startup restore just put the
   * newest snapshot back), so an idle Chroma costs nothing from the first interval on.
   */
  markProtected(): void {
    this.protectedCount = this.options.changeSignal?.();
  }

  /** Whether Chroma may hold data no snapshot has; true when that cannot be known (no change signal yet). */
  unprotectedChanges(): boolean {
    return this.changedSinceSnapshot() !== false;
  }

  /** When the next automatic backup will run, if data changed; null when none is due. */
  nextBackupAt(): Date | null {
    if (!this.detach || !this.unprotectedChanges()) return null;
    const times = [this.tick?.at, this.oneShot?.at].filter((d): d is Date => d !== undefined);
    return times.length ? new Date(Math.min(...times.map((d) => d.getTime()))) : null;
  }

  /** The service's scheduler hook: a backup at `at` at the latest, coalesced with the interval. */
  schedule(at: Date): Date {
    if (this.tick && this.tick.at <= at) return this.tick.at;
    if (this.oneShot && this.oneShot.at <= at) return this.oneShot.at;
    if (this.oneShot) clearTimeout(this.oneShot.timer);
    const delay = Math.max(0, at.getTime() - this.now().getTime());
    const timer = setTimeout(() => {
      this.oneShot = null;
      void this.runIfChanged("scheduled");
    }, delay);
    timer.unref();
    this.oneShot = { at, timer };
    this.log("info", "automatic backup scheduled", { at: at.toISOString() });
    return at;
  }

  /**
   * The backup on stop (SIGTERM, SIGINT, the app's exit): of unprotected changes only,
   * within BACKUP_ON_STOP_TIMEOUT. On timeout the backup is aborted before its commit
   * (nothing partial is ever visible: the manifest is written last) and abandoned.
   * `signal`: aborts it sooner (e.g. a second signal). Stops the timers first.
   */
  async backupOnStop(signal?: AbortSignal): Promise<StopBackupResult> {
    this.stop();
    const budgetMs = this.options.onStopTimeoutSeconds * 1000;
    const started = this.now().getTime();
    if (this.running) await Promise.race([this.running, sleep(budgetMs)]);
    if (!this.unprotectedChanges()) {
      this.log("info", "on-stop backup: nothing to protect (no change since the newest snapshot)");
      return { outcome: "nothing-to-protect" };
    }
    if (budgetMs <= 0) {
      this.log("warn", "on-stop backup disabled (BACKUP_ON_STOP_TIMEOUT=0): changes since the newest snapshot are not backed up");
      return { outcome: "disabled" };
    }
    const controller = new AbortController();
    const abort = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", abort, { once: true });
    const remaining = Math.max(0, budgetMs - (this.now().getTime() - started));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), remaining);
      controller.signal.addEventListener("abort", () => resolve("timeout"), { once: true });
    });
    const backup = this.service.backup({ automatic: true }, undefined, controller.signal);
    backup.catch(() => {}); // settled below, or abandoned
    try {
      const first = await Promise.race([backup, timedOut]);
      if (first === "timeout") {
        controller.abort(new Error("on-stop backup timed out"));
        // Its manifest write may have begun before the abort: then it commits as it unwinds.
        const unwound = await Promise.race([backup.then((outcome) => ({ outcome }), () => null), sleep(UNWIND_MS).then(() => "still running" as const)]);
        const why = signal?.aborted ? "aborted" : `ran out of BACKUP_ON_STOP_TIMEOUT (${this.options.onStopTimeoutSeconds}s)`;
        if (unwound !== null && unwound !== "still running") {
          this.log("warn", `on-stop backup ${why} as it committed: the commit landed`, { budgetSeconds: this.options.onStopTimeoutSeconds });
          return this.report("on-stop", unwound.outcome);
        }
        const what =
          unwound === null
            ? "abandoned before its commit, nothing partial was written; changes since the newest snapshot are not in the store"
            : `abandoned, still unwinding after ${UNWIND_MS / 1000}s: a manifest write in flight lands whole or not at all (GET /backups shows which), nothing partial is visible; changes since the newest snapshot may not be in the store`;
        this.log("error", `on-stop backup ${why}: ${what}`, { budgetSeconds: this.options.onStopTimeoutSeconds });
        return { outcome: "timeout", error: why };
      }
      return this.report("on-stop", first);
    } catch (err) {
      return this.failed("on-stop", err);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    }
  }

  /** Changed since the data was last protected: true, false, or undefined when unknown. */
  private changedSinceSnapshot(): boolean | undefined {
    const count = this.options.changeSignal?.();
    if (count === undefined || this.protectedCount === undefined) return undefined;
    return count !== this.protectedCount;
  }

  private armInterval(): void {
    const seconds = this.options.intervalSeconds;
    if (seconds === null || !(seconds > 0)) return;
    const at = new Date(this.now().getTime() + seconds * 1000);
    const timer = setTimeout(() => {
      this.armInterval();
      void this.runIfChanged("interval");
    }, seconds * 1000);
    timer.unref();
    this.tick = { at, timer };
  }

  /** One automatic backup, unless one is running or nothing changed (then no request at all). */
  private async runIfChanged(trigger: "interval" | "scheduled"): Promise<void> {
    if (this.running || !this.unprotectedChanges()) return;
    const run = this.service.backup({ automatic: true }).then(
      (outcome) => void this.report(trigger, outcome),
      (err: unknown) => {
        this.failed(trigger, err);
        if (trigger === "scheduled" && err instanceof ConflictError && this.detach) this.schedule(new Date(this.now().getTime() + CONFLICT_RETRY_MS));
      },
    );
    this.running = run.finally(() => (this.running = null));
    await this.running;
  }

  private report(trigger: string, outcome: BackupOutcome): StopBackupResult {
    if (outcome.skipped) {
      this.log("info", `${trigger} backup: unchanged since snapshot ${outcome.latest.id}, nothing committed`, { trigger, latest: outcome.latest.id });
      return { outcome: "unchanged" };
    }
    this.log("info", `${trigger} backup committed`, { trigger, snapshot: outcome.snapshot.id, records: outcome.snapshot.records, newBytes: outcome.snapshot.newBytes, forgotten: outcome.retention?.deleted.length ?? null });
    return { outcome: "committed", snapshot: outcome.snapshot.id };
  }

  private failed(trigger: string, err: unknown): StopBackupResult {
    const error = err instanceof Error ? err.message : String(err);
    // The service logged the refusal at error level already.
    if (err instanceof RestorePendingError) return { outcome: "held", error };
    if (err instanceof ConflictError) this.log("warn", `${trigger} backup: another backup or prune holds the lock; tried again later`, { trigger, ...errorFields(err) });
    else this.log("error", `${trigger} backup failed`, { trigger, ...errorFields(err) });
    return { outcome: "failed", error };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
