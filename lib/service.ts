import type { ChromaRest } from "./chroma/rest.js";
import type { Config, RetentionConfig } from "./config.js";
import { ConflictError, ImagesUnavailableError, NotFoundError, OperationCancelledError, RestorePendingError, SnapshotCorruptError } from "./errors.js";
import { StoreLock, type LeaseInfo } from "./lock.js";
import { errorFields, jsonLogger, type Logger } from "./log.js";
import { prune, type PruneResult } from "./prune.js";
import { SAFETY_TAG, type RetentionRules } from "./retention.js";
import { isUnchanged, takeSnapshot } from "./snapshot/backup.js";
import type { ProgressEvent } from "./snapshot/progress.js";
import { DROP_WARNING_PREFIX } from "./snapshot/drop.js";
import { readCatalog, readManifest } from "./snapshot/catalog.js";
import { ManifestKeys } from "./snapshot/signing.js";
import { manifestKey, summarize, type Manifest, type SnapshotSummary } from "./snapshot/manifest.js";
import { isAsideCollection } from "./snapshot/aside.js";
import { planRestore, restoreSnapshot } from "./snapshot/restore.js";
import { verifySnapshot, type VerifyReport } from "./snapshot/verify.js";
import { findMisfits, targetLimits, type MisfitReport, type TargetLimitSettings } from "./snapshot/target-limits.js";
import { readDrill, readDrills, runDrill, type DrillResult } from "./drill.js";
import { estimateRestore, readRestoreStats, recordRestore, type ImageForRestore, type RtoEstimate } from "./rto.js";
import { imageDue } from "./images/auto-image.js";
import type { BuiltImage } from "./images/build.js";
import { listImages, pruneImages } from "./images/catalog.js"; // not store.js: the Worker bundles this module (no filesystem)
import { summarizeImage, type ImageSummary } from "./images/types.js";
import { isNotFound } from "./storage/errors.js";
import { formatWait } from "./storage/retry.js";
import type { Storage } from "./storage/types.js";

export interface ServiceOptions {
  chroma: ChromaRest;
  storage: Storage;
  /** Shown in /status; the store's key prefix. */
  storagePrefix: string;
  retention: RetentionConfig;
  /** Default interval (seconds) of `backupIfDue`: BACKUP_MIN_INTERVAL. */
  backupMinIntervalSeconds?: number;
  log?: Logger;
  /** Who holds the lock, in 409 answers and logs. */
  holder?: string;
  lockTtlMs?: number;
  now?: () => Date;
  /** SNAPSHOT_SIGNING_KEY: the first signs new manifests, any verifies; without, manifests are checksummed but not signed. */
  signingKeys?: readonly string[];
  /** A runtime that can schedule a backup (Node: AutoBackup); set later with `service.scheduler = ...` too. */
  scheduler?: BackupScheduler;
  /** Whether Chroma's data changed since the newest snapshot; undefined: unknown (counted as changed). */
  changeSignal?: () => boolean | undefined;
  /** CHROMA_TARGET_LIMITS: what restores write into Chroma is held to these (Chroma Cloud's quotas on Cloud). */
  targetLimits?: TargetLimitSettings;
  /** IMAGE_KEEP: the restore images prune keeps, newest first (default: every image whose snapshot remains). */
  imageKeep?: number;
  /** Making restore images: the Node runtime with the embedded Chroma and IMAGES=on. Absent: `imagesUnavailable` says why. */
  images?: ImageMaking;
  /** Why restore images cannot be made here (IMAGES=off, CHROMA_URL, the Worker): the message of a refused POST /backups/:id/image. */
  imagesUnavailable?: string;
  /** How long /status waits for each part (Chroma, the catalog, the objects, the lock) before it says it could not read it; default 4 s. */
  statusPartTimeoutMs?: number;
}

/** What a runtime that can make restore images brings (runtime/images.ts on Node). */
export interface ImageMaking {
  /** Makes an image of the snapshot (lib/images/build.ts's buildImage, with the scratch Chroma bound in). */
  make: (storage: Storage, snapshot: Manifest, options: { signal: AbortSignal; keys: ManifestKeys; lease: () => Promise<{ signal: AbortSignal; release(): Promise<void> }>; log: Logger; now: () => Date }) => Promise<BuiltImage>;
  /** The version of the Chroma images are made with: images of another are not counted as fresh. */
  chromaVersion: string;
  /** IMAGE_INTERVAL in seconds: after a backup, a new image when the newest is older. */
  intervalSeconds: number;
}

/** The restore image being made by this instance (at most one). */
export interface RunningImage {
  snapshot: string;
  startedAt: string;
}

export type MadeImage = BuiltImage & { imagesPruned: string[] };

/** The backup or prune this instance is running (at most one). */
export interface RunningOperation {
  operation: "backup" | "prune";
  startedAt: string;
  /** Its lease's expiry once taken (renewed while it runs); before that, when a lease taken now would expire. */
  expiresAt: string;
}

export interface BackupScheduler {
  /** Arranges a backup at `at` (or earlier); answers when it will run. */
  schedule(at: Date): Date;
  /** When the next automatic backup runs; null when none is due (AutoBackup). */
  nextBackupAt?(): Date | null;
}

/**
 * Told of every backup of all collections as it starts (after the checks that could
 * refuse or skip it), and of its end: `outcome` null when it failed. AutoBackup keeps its
 * change baseline with this. `restored`: the service changed Chroma's data itself.
 */
export interface BackupWatcher {
  backupStarting?(request: BackupRequest): ((outcome: BackupOutcome | null) => void) | void;
  restored?(): void;
}

export type StartupRestoreState = "none" | "running" | "failed" | "done" | "overridden";

export interface BackupRequest {
  collections?: string[];
  /** Seconds: skip when the newest snapshot is younger than this. */
  ifOlderThan?: number;
  tag?: string;
  /** The interval and on-stop calls: refused (RestorePendingError) until the startup restore succeeded; so is any `ifOlderThan` call. */
  automatic?: boolean;
  /** Commit a snapshot even when nothing changed since the newest one. */
  force?: boolean;
}

export type BackupOutcome =
  | { skipped: true; reason: string; latest: SnapshotSummary; message?: string; scheduledAt?: string }
  | { skipped: false; snapshot: SnapshotSummary; manifest: Manifest; retention: PruneResult | null };

export interface RestoreRequest {
  snapshot?: string;
  collections?: string[];
  rename?: Record<string, string>;
  mode?: "replace" | "merge";
  ifEmpty?: boolean;
  safetySnapshot?: boolean;
  dryRun?: boolean;
  /** With `latest`: verify first, and fall back to the newest snapshot that verifies (the startup hook's choice). */
  fallbackToVerified?: boolean;
}

export type RestoreOutcome =
  | { restored: true; snapshot: string; collections: { name: string; records: number }[]; safetySnapshot: string | null; durationMs: number; skipped?: { id: string; reason: string }[] }
  | { restored: false; reason: string; snapshot?: string; dryRun?: boolean; plan?: { name: string; from: string; records: number; action: string }[]; wouldNotFit?: MisfitReport; skipped?: { id: string; reason: string }[] };

export interface PruneRequest extends Omit<RetentionRules, "keepSafety"> {
  dryRun?: boolean;
  limit?: number;
  graceSeconds?: number;
}


/** Everything the service does, free of HTTP: the handlers and the CLI call this. */
export class BackupService {
  readonly chroma: ChromaRest;
  readonly storage: Storage;
  /** Signs and checks every manifest this service writes and reads. */
  readonly manifestKeys: ManifestKeys;
  private readonly lock: StoreLock;
  private readonly log: Logger;
  private readonly holder: string;
  private readonly now: () => Date;
  private readonly watchers = new Set<BackupWatcher>();
  scheduler: BackupScheduler | undefined;
  changeSignal: (() => boolean | undefined) | undefined;
  /** The Chroma server's version when the runtime knows it (the embedded one's bindings); the version route says "1.0.0" on 1.3 too. */
  chromaServerVersion: (() => string) | undefined;
  /** The restore image a startup restore of a snapshot would use (set by the embedded runtime with IMAGES=on); the RTO counts it. */
  imageForRestore: ((snapshot: Manifest) => Promise<ImageForRestore | null>) | undefined;
  private restoreState: BackupService["startupRestore"] = { state: "none", since: new Date().toISOString(), attempts: 0 };
  /** The backup or prune this instance runs: a second one is refused at once, before the store is asked. */
  private running: RunningOperation | null = null;
  /** The image build this instance runs (one at a time), and what stops it. */
  private imaging: (RunningImage & { stop: AbortController; done: Promise<unknown> }) | null = null;
  /** Automatic image builds started after backups and not yet over. */
  private readonly imageWork = new Set<Promise<void>>();
  private imagesStopped = false;

  /** The service as a runtime builds it from configuration. */
  static fromConfig(config: Config, parts: Pick<ServiceOptions, "chroma" | "storage" | "log" | "holder" | "images">): BackupService {
    const imagesUnavailable = !config.images.enabled
      ? "restore images are off (IMAGES=off)"
      : config.chroma.url
        ? "restore images need the embedded Chroma: this service protects the Chroma at CHROMA_URL"
        : "this runtime cannot make restore images (they need the Node runtime with the embedded Chroma)";
    return new BackupService({
      ...parts,
      images: config.images.enabled ? parts.images : undefined,
      imagesUnavailable,
      imageKeep: config.images.keep,
      storagePrefix: config.storage.prefix,
      retention: config.retention,
      backupMinIntervalSeconds: config.backupMinIntervalSeconds,
      lockTtlMs: config.lockTtlMs,
      signingKeys: config.signingKeys,
      targetLimits: config.chroma.limits,
    });
  }

  constructor(private readonly options: ServiceOptions) {
    this.chroma = options.chroma;
    this.storage = options.storage;
    this.log = options.log ?? jsonLogger;
    this.now = options.now ?? (() => new Date());
    this.scheduler = options.scheduler;
    this.changeSignal = options.changeSignal;
    this.restoreState.since = this.now().toISOString();
    this.lock = new StoreLock(options.storage, "maintenance", { ttlMs: options.lockTtlMs, now: () => this.now().getTime() });
    this.holder = options.holder ?? `chroma-backup-${Math.random().toString(16).slice(2, 10)}`;
    this.manifestKeys = new ManifestKeys(options.signingKeys, (snapshot, keyId) =>
      this.log("warn", "a signed manifest was read without SNAPSHOT_SIGNING_KEY: accepted on its checksum, its signature not checked (set the key to check it)", { snapshot, keyId }),
    );
  }

  get retention() {
    return this.options.retention;
  }

  /**
   * How the startup restore went: "none" (none asked), "running", "failed" (being
   * retried), "done" (restored, or nothing to restore), "overridden" (an operator opened
   * the service without the data). While "running" or "failed", automatic backups are refused.
   */
  /** While the startup restore runs or is being retried: automatic backups are held, /ready is 503. */
  get restorePending(): boolean {
    return this.restoreState.state === "running" || this.restoreState.state === "failed";
  }

  get startupRestore(): { state: StartupRestoreState; since: string; lastError?: string; attempts: number } {
    return { ...this.restoreState };
  }

  /** Records a step of the startup restore (`detail`: the error of a failed attempt, or why). */
  markStartupRestore(state: StartupRestoreState, detail?: unknown): void {
    const previous = this.restoreState;
    const lastError = state === "failed" ? (detail instanceof Error ? detail.message : detail === undefined ? "unknown error" : String(detail)) : previous.lastError;
    this.restoreState = { state, since: this.now().toISOString(), attempts: previous.attempts + ((state === "running" && previous.state !== "running") || (state === "failed" && previous.state === "failed") ? 1 : 0), ...(lastError === undefined ? {} : { lastError }) };
    const fields = { from: previous.state, attempt: this.restoreState.attempts, ...(detail === undefined ? {} : detail instanceof Error ? errorFields(detail) : { detail: String(detail) }) };
    if (state === "failed") this.log("error", "startup restore failed: automatic backups are held until it succeeds", fields);
    else if (state === "overridden") this.log("warn", "startup restore overridden by an operator: the service runs without the data; automatic backups resume", fields);
    else this.log("info", `startup restore ${state}`, fields);
  }

  /** Subscribes to backups and restores (see BackupWatcher); returns the unsubscribe. */
  watch(watcher: BackupWatcher): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  /** The newest snapshot that is not a pre-restore safety snapshot. */
  async latest(): Promise<Manifest | null> {
    const { snapshots } = await readCatalog(this.storage, this.manifestKeys);
    return snapshots.find((m) => m.tag !== SAFETY_TAG) ?? null;
  }

  /**
   * Runs `fn` as this instance's one backup or prune. A second one answers 409 at once,
   * naming the first, instead of queueing behind it (on a hung store, for minutes).
   */
  private async exclusive<T>(operation: RunningOperation["operation"], fn: () => Promise<T>): Promise<T> {
    const busy = this.running;
    if (busy) {
      throw new ConflictError(`another ${busy.operation} is running in this instance (since ${busy.startedAt}); try again when it is done`, {
        holder: this.holder,
        operation: busy.operation,
        startedAt: busy.startedAt,
        expiresAt: busy.expiresAt,
      });
    }
    const started = this.now();
    this.running = { operation, startedAt: started.toISOString(), expiresAt: new Date(started.getTime() + this.lock.ttlMs).toISOString() };
    try {
      return await fn();
    } finally {
      this.running = null;
    }
  }

  /** What this instance is running, if anything. */
  get runningOperation(): RunningOperation | null {
    return this.running;
  }

  async backup(request: BackupRequest = {}, onProgress?: (e: ProgressEvent) => void, signal?: AbortSignal): Promise<BackupOutcome> {
    signal?.throwIfAborted();
    if (request.automatic || request.ifOlderThan !== undefined) this.refuseWhileRestorePending(request);
    return this.exclusive("backup", () => this.backupExclusive(request, onProgress, signal));
  }

  private async backupExclusive(request: BackupRequest, onProgress: ((e: ProgressEvent) => void) | undefined, signal: AbortSignal | undefined): Promise<BackupOutcome> {
    const callerLeft = cancelledBy(signal, "backup");
    if (request.ifOlderThan !== undefined) {
      const latest = await this.latest();
      if (latest) {
        const age = (this.now().getTime() - Date.parse(latest.createdAt)) / 1000;
        if (age < request.ifOlderThan) {
          const skipped = { skipped: true as const, reason: `the newest snapshot is ${Math.round(age)}s old, younger than ${request.ifOlderThan}s`, latest: summarize(latest) };
          // A change skipped here waits at most until the interval is up.
          if (!this.scheduler || this.changeSignal?.() === false) return skipped;
          const at = this.scheduler.schedule(new Date(Date.parse(latest.createdAt) + request.ifOlderThan * 1000));
          return { ...skipped, scheduledAt: at.toISOString() };
        }
      }
    }
    callerLeft?.throwIfAborted();
    const lease = await this.lock.acquire("backup", this.holder);
    if (this.running) this.running.expiresAt = lease.info.expiresAt;
    // Stops when the lease is lost or the caller left; checked between pages and chunks.
    const stop = callerLeft ? AbortSignal.any([lease.signal, callerLeft]) : lease.signal;
    const ends = request.collections ? [] : [...this.watchers].map((w) => w.backupStarting?.(request));
    let outcome: BackupOutcome | null = null;
    try {
      const taken = await takeSnapshot(this.chroma.withSignal(stop), this.storage, {
        collections: request.collections,
        tag: request.tag ?? null,
        onProgress,
        now: this.now,
        beforeCommit: async () => {
          stop.throwIfAborted();
          await lease.assertHeld();
        },
        signing: this.manifestKeys,
        skipUnchanged: !request.force,
        signal: stop,
      });
      if (isUnchanged(taken)) {
        const latest = summarize(taken.unchanged);
        outcome = { skipped: true, reason: "unchanged", latest, message: `nothing changed since snapshot ${latest.id}: no snapshot committed ("force": true commits one anyway)` };
        return outcome;
      }
      const manifest = taken;
      for (const w of manifest.warnings) if (w.startsWith(DROP_WARNING_PREFIX)) this.log("warn", w, { snapshot: manifest.id, records: manifest.records, collections: manifest.collections.length });
      let retention: PruneResult | null = null;
      try {
        retention = await prune(this.storage, this.retention, { keys: this.manifestKeys, now: this.now });
      } catch (err) {
        // The snapshot is committed; a failed rotation is retried by the next one.
        this.log("warn", "retention after backup failed", { snapshot: manifest.id, error: (err as Error).message });
      }
      outcome = { skipped: false, snapshot: summarize(manifest), manifest, retention };
      if (!request.collections && manifest.tag !== SAFETY_TAG) this.imageAfterBackup(manifest);
      return outcome;
    } finally {
      for (const end of ends) end?.(outcome);
      await lease.release();
    }
  }

  private refuseWhileRestorePending(request: BackupRequest): void {
    const { state, since, lastError, attempts } = this.restoreState;
    if (!this.restorePending) return;
    const why = state === "running" ? `is still running (attempt ${attempts}, since ${since})` : `failed (attempt ${attempts}, at ${since}: ${lastError ?? "unknown error"}) and is being retried`;
    const message =
      `automatic backup refused: the startup restore has not succeeded yet; it ${why}. ` +
      "A backup now could make an empty or partial Chroma the newest snapshot. Wait for the restore to succeed, fix the store it reads from, " +
      "or, to back up what Chroma holds now on purpose, send a plain POST /backups (without ifOlderThan).";
    this.log("error", message, { startupRestore: state, attempts, since, lastError, ifOlderThan: request.ifOlderThan ?? null });
    throw new RestorePendingError(message, { startupRestore: state, since, attempts, lastError: lastError ?? null });
  }

  /**
   * The after-upload call: a backup only when the newest snapshot is older than
   * `minIntervalSeconds` (default BACKUP_MIN_INTERVAL, 1h).
   */
  backupIfDue(minIntervalSeconds = this.options.backupMinIntervalSeconds ?? 3600, request: Omit<BackupRequest, "ifOlderThan"> = {}): Promise<BackupOutcome> {
    return this.backup({ ...request, ifOlderThan: minIntervalSeconds });
  }

  async restore(request: RestoreRequest = {}, onProgress?: (e: ProgressEvent) => void, signal?: AbortSignal): Promise<RestoreOutcome> {
    const started = this.now().getTime();
    const stop = cancelledBy(signal, "restore");
    stop?.throwIfAborted();
    const chroma = this.chroma.withSignal(stop);
    const existing = (await chroma.listCollections()).filter((c) => !isAsideCollection(c.name));
    // ifEmpty: no collection holds a record (empty ones, e.g. an app's, do not count).
    const holding = request.ifEmpty ? await this.firstHoldingRecords(existing) : null;
    const skipped: { id: string; reason: string }[] = [];
    let manifest: Manifest;
    if ((request.snapshot ?? "latest") === "latest") {
      const { snapshots, damaged } = await readCatalog(this.storage, this.manifestKeys);
      const candidates = snapshots.filter((m) => m.tag !== SAFETY_TAG);
      // Ids sort by time: a damaged manifest newer than the newest good one was skipped.
      for (const d of damaged) if (!candidates[0] || d.id > candidates[0].id) skipped.push({ id: d.id, reason: d.error });
      if (!candidates[0]) return { restored: false, reason: "no snapshot", ...(skipped.length ? { skipped } : {}) };
      manifest = candidates[0];
      if (request.fallbackToVerified && !holding) {
        manifest = await this.newestVerified(candidates, skipped);
      }
    } else {
      manifest = await readManifest(this.storage, request.snapshot!, this.manifestKeys);
    }
    const plan = planRestore(manifest, request);
    const mode = request.mode ?? "replace";

    if (holding) {
      return { restored: false, reason: `Chroma already holds records (collection ${holding.name} has ${holding.records}); ifEmpty restores only when no collection holds a record`, snapshot: manifest.id };
    }
    const replaced = plan.filter((p) => existing.some((c) => c.name === p.target)).map((p) => p.target);
    if (request.dryRun) {
      const wouldNotFit = await findMisfits(this.storage, plan, await targetLimits(chroma, this.options.targetLimits), stop);
      return {
        restored: false,
        dryRun: true,
        reason: "dry run: nothing was changed",
        snapshot: manifest.id,
        plan: plan.map((p) => ({ name: p.target, from: p.entry.name, records: p.entry.records, action: replaced.includes(p.target) ? mode : "create" })),
        wouldNotFit,
      };
    }

    let safetySnapshot: string | null = null;
    // With ifEmpty the collections replaced hold no record: nothing a safety snapshot would keep.
    if ((request.safetySnapshot ?? true) && replaced.length > 0 && !request.ifEmpty) {
      const outcome = await this.backup({ collections: replaced, tag: SAFETY_TAG }, undefined, signal);
      // Unchanged since the newest safety snapshot (a retried restore): that one keeps the same data.
      safetySnapshot = outcome.skipped ? outcome.latest.id : outcome.snapshot.id;
      this.log("info", outcome.skipped ? "safety snapshot before restore: unchanged since the newest one, reused" : "safety snapshot taken before restore", { snapshot: safetySnapshot, collections: replaced });
    }
    stop?.throwIfAborted();
    let restored;
    try {
      restored = await restoreSnapshot(chroma, this.storage, manifest, { ...request, mode, onProgress, log: this.log, signal: stop, limits: this.options.targetLimits });
    } finally {
      for (const w of this.watchers) w.restored?.();
    }
    const durationMs = this.now().getTime() - started;
    const entries = plan.map((p) => p.entry);
    await recordRestore(this.storage, { at: this.now().toISOString(), snapshot: manifest.id, kind: "restore", records: entries.reduce((n, e) => n + e.records, 0), bytes: entries.reduce((n, e) => n + e.bytes, 0), durationMs }, this.log);
    return {
      restored: true,
      snapshot: manifest.id,
      collections: restored.map((r) => ({ name: r.name, records: r.records })),
      ...(restored.some((r) => r.warnings.length > 0) ? { warnings: restored.flatMap((r) => r.warnings) } : {}),
      safetySnapshot,
      durationMs,
      ...(skipped.length ? { skipped } : {}),
    };
  }

  /** The first collection holding a record, or null when none does. */
  private async firstHoldingRecords(collections: { id: string; name: string }[]): Promise<{ name: string; records: number } | null> {
    for (const c of collections) {
      const records = await this.chroma.count(c.id);
      if (records > 0) return { name: c.name, records };
    }
    return null;
  }

  /** The newest of `candidates` (newest first) whose every chunk verifies; the others go to `skipped`. */
  private async newestVerified(candidates: Manifest[], skipped: { id: string; reason: string }[]): Promise<Manifest> {
    for (const m of candidates) {
      const report = await verifySnapshot(this.storage, m);
      if (report.ok) return m;
      const first = report.errors[0]!;
      skipped.push({ id: m.id, reason: `${report.errors.length} damaged chunk(s), first ${first.chunk} in ${first.collection}: ${first.message}` });
    }
    const last = skipped.at(-1)!;
    throw new SnapshotCorruptError(`no snapshot in the store verifies (${skipped.length} tried; the oldest: ${last.reason})`, null, null);
  }

  async list(filter: { tag?: string; limit?: number } = {}): Promise<SnapshotSummary[]> {
    const { snapshots } = await readCatalog(this.storage, this.manifestKeys);
    const matching = snapshots.filter((m) => filter.tag === undefined || m.tag === filter.tag).map(summarize);
    return filter.limit === undefined ? matching : matching.slice(0, filter.limit);
  }

  async get(idOrLatest: string): Promise<Manifest> {
    if (idOrLatest === "latest") {
      const latest = await this.latest();
      if (!latest) throw new NotFoundError("no snapshot in the store");
      return latest;
    }
    return readManifest(this.storage, idOrLatest, this.manifestKeys);
  }

  async verify(idOrLatest: string, onChunk?: (done: number, total: number) => void, signal?: AbortSignal): Promise<VerifyReport> {
    const stop = cancelledBy(signal, "verify");
    stop?.throwIfAborted();
    return verifySnapshot(this.storage, await this.get(idOrLatest), onChunk, stop);
  }

  async delete(id: string): Promise<{ deleted: string }> {
    const key = manifestKey(id);
    try {
      await this.storage.head(key);
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`no snapshot ${id}`);
      throw err;
    }
    await this.storage.delete(key);
    return { deleted: id };
  }

  async prune(request: PruneRequest = {}, signal?: AbortSignal): Promise<PruneResult> {
    // Checked before it starts only: a prune is short, and deletes nothing a snapshot still needs.
    if (signal?.aborted) throw new OperationCancelledError("the client disconnected: the prune was cancelled and changed nothing");
    // Each rule the request leaves out falls back to its configured value (keepLast: RETENTION_KEEP_LAST).
    const rules: RetentionRules = {
      keepLast: request.keepLast ?? this.retention.keepLast,
      keepHourly: request.keepHourly ?? this.retention.keepHourly,
      keepDaily: request.keepDaily ?? this.retention.keepDaily,
      keepWeekly: request.keepWeekly ?? this.retention.keepWeekly,
      keepMonthly: request.keepMonthly ?? this.retention.keepMonthly,
      keepWithin: request.keepWithin ?? this.retention.keepWithin,
      keepTags: request.keepTags,
      keepSafety: this.retention.keepSafety,
      keepBeforeDrop: this.retention.keepBeforeDrop,
    };
    // IMAGE_KEEP: the images beyond it go in the same pass, and the chunks only they used in its sweep.
    const imageKeep = this.options.imageKeep;
    if (request.dryRun) return prune(this.storage, rules, { dryRun: true, limit: request.limit, graceSeconds: request.graceSeconds, now: this.now, keys: this.manifestKeys, imageKeep });
    return this.exclusive("prune", async () => {
      const lease = await this.lock.acquire("prune", this.holder);
      try {
        return await prune(this.storage, rules, { limit: request.limit, graceSeconds: request.graceSeconds, now: this.now, keys: this.manifestKeys, imageKeep });
      } finally {
        await lease.release();
      }
    });
  }

  /**
   * Makes a restore image of the snapshot now (POST /backups/:id/image): in a scratch
   * Chroma, never the app's (lib/images/build.ts); also a restore drill, recorded with the
   * snapshot. One at a time per instance (ConflictError); ImagesUnavailableError where
   * images cannot be made. Then IMAGE_KEEP is applied to the images.
   */
  async makeImage(idOrLatest: string, signal?: AbortSignal): Promise<MadeImage> {
    const images = this.options.images;
    if (!images || this.imagesStopped) throw new ImagesUnavailableError(this.imagesStopped ? "the service is stopping: no restore image is made" : (this.options.imagesUnavailable ?? "restore images cannot be made here"));
    const busy = this.imaging;
    if (busy) throw new ConflictError(`a restore image (of snapshot ${busy.snapshot}) is being made in this instance since ${busy.startedAt}; one at a time: try again when it is done`, { snapshot: busy.snapshot, startedAt: busy.startedAt });
    const stop = new AbortController();
    const caller = cancelledBy(signal, "image build");
    const stopBoth = caller ? AbortSignal.any([stop.signal, caller]) : stop.signal;
    let settle!: () => void;
    const done = new Promise<void>((r) => (settle = r));
    const imaging = { snapshot: idOrLatest, startedAt: this.now().toISOString(), stop, done };
    this.imaging = imaging;
    try {
      const manifest = await this.get(idOrLatest);
      imaging.snapshot = manifest.id;
      const built = await images.make(this.storage, manifest, { signal: stopBoth, keys: this.manifestKeys, lease: () => this.leaseForImage(stopBoth), log: this.log, now: this.now });
      let imagesPruned: string[] = [];
      try {
        const keep = this.options.imageKeep ?? Infinity;
        imagesPruned = (await pruneImages(this.storage, keep, { keys: this.manifestKeys })).deleted;
        if (imagesPruned.length > 0) this.log("info", "restore images beyond IMAGE_KEEP forgotten (their chunks go at the next prune)", { deleted: imagesPruned, keep });
      } catch (err) {
        this.log("warn", "applying IMAGE_KEEP after an image build failed (the next prune applies it)", errorFields(err));
      }
      return { ...built, imagesPruned };
    } finally {
      this.imaging = null;
      settle();
    }
  }

  /** The image build this instance runs, if any. */
  get runningImage(): RunningImage | null {
    return this.imaging ? { snapshot: this.imaging.snapshot, startedAt: this.imaging.startedAt } : null;
  }

  /** Resolves when the automatic image builds started so far are over (they log their own outcome). */
  async imagesSettled(): Promise<void> {
    while (this.imageWork.size > 0) await Promise.all([...this.imageWork]);
  }

  /** Stops the image build under way (its scratch Chroma stopped, nothing committed) and starts no other. */
  async stopImages(): Promise<void> {
    this.imagesStopped = true;
    const running = this.imaging;
    running?.stop.abort(new OperationCancelledError("the service is stopping: the restore image build was abandoned, nothing committed"));
    await Promise.allSettled([running?.done, this.imagesSettled()]);
  }

  /** The store lock for an image's upload: waits (up to twice the lease's TTL) while a backup or prune holds it. */
  private async leaseForImage(signal: AbortSignal): Promise<{ signal: AbortSignal; release(): Promise<void> }> {
    const deadline = Date.now() + 2 * this.lock.ttlMs;
    for (;;) {
      signal.throwIfAborted();
      try {
        return await this.lock.acquire("image", this.holder);
      } catch (err) {
        if (!(err instanceof ConflictError) || Date.now() > deadline) throw err;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** After a committed backup of every collection: a restore image in the background when one is due (lib/images/auto-image.ts); never fatal. */
  private imageAfterBackup(manifest: Manifest): void {
    const images = this.options.images;
    if (!images || this.imagesStopped) return;
    if (this.imaging) {
      this.log("info", `no restore image of snapshot ${manifest.id} after the backup: one (of ${this.imaging.snapshot}) is being made`, { snapshot: manifest.id });
      return;
    }
    const work = (async () => {
      try {
        const due = imageDue(await listImages(this.storage, this.manifestKeys), manifest, { chromaVersion: images.chromaVersion, intervalSeconds: images.intervalSeconds, now: this.now() });
        if (!due) return;
        this.log("info", `making a restore image of snapshot ${manifest.id} after the backup: ${due}`, { snapshot: manifest.id });
        await this.makeImage(manifest.id);
      } catch (err) {
        if (this.imagesStopped && err instanceof OperationCancelledError) return;
        this.log(err instanceof ConflictError ? "warn" : "error", `the automatic restore image of snapshot ${manifest.id} was not made`, { snapshot: manifest.id, ...errorFields(err) });
      }
    })();
    this.imageWork.add(work);
    void work.finally(() => this.imageWork.delete(work));
  }

  /**
   * What /status shows. Answers within a few seconds whatever Chroma or the store does:
   * each part (Chroma, the catalog, the objects, the lock) gets `statusPartTimeoutMs`; a
   * part that failed or did not answer is null (the lock: "unknown") and listed in `errors`.
   */
  async status(): Promise<Status> {
    const waitMs = this.options.statusPartTimeoutMs ?? 4000;
    const errors: Status["errors"] = [];
    const part = async <T>(name: string, read: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await withinDeadline(read(), waitMs, () => new Error(`no answer within ${formatWait(waitMs)}`));
      } catch (err) {
        errors.push({ part: name, message: (err as Error).message });
        return undefined;
      }
    };
    const chroma: Status["chroma"] = { url: this.chroma.url, reachable: false, version: null, collections: null, records: null };
    const readChroma = async () => {
      const answered = await this.chroma.version();
      chroma.version = this.chromaServerVersion?.() ?? answered;
      chroma.reachable = true;
      const collections = (await this.chroma.listCollections()).filter((c) => !isAsideCollection(c.name));
      let records = 0;
      for (const c of collections) records += await this.chroma.count(c.id);
      chroma.collections = collections.length;
      chroma.records = records;
    };
    const readObjects = async () => {
      let chunks = 0;
      let storedBytes = 0;
      for await (const info of this.storage.list("")) {
        if (info.key.startsWith("chunks/")) chunks++;
        storedBytes += info.size ?? 0;
      }
      return { chunks, storedBytes };
    };
    const [, catalog, objects, lock, images] = await Promise.all([
      part("chroma", readChroma),
      part("catalog", () => readCatalog(this.storage, this.manifestKeys)),
      part("objects", readObjects),
      part("lock", () => this.lock.current()),
      part("images", () => listImages(this.storage, this.manifestKeys)),
    ]);
    const last = catalog?.snapshots.find((m) => m.tag !== SAFETY_TAG) ?? null;
    const recovery = catalog ? await part("recovery", () => this.recoveryObjectives(last)) : undefined;
    return {
      chroma: { ...chroma },
      storage: {
        driver: this.storage.driver,
        prefix: this.options.storagePrefix,
        snapshots: catalog ? catalog.snapshots.length : null,
        damagedSnapshots: catalog?.damaged ?? [],
        signingKeyIds: this.manifestKeys.ids,
        chunks: objects?.chunks ?? null,
        storedBytes: objects?.storedBytes ?? null,
        logicalBytes: catalog ? catalog.snapshots.reduce((n, m) => n + m.bytes, 0) : null,
      },
      lastBackup: last ? { id: last.id, createdAt: last.createdAt, ageSeconds: Math.floor((this.now().getTime() - Date.parse(last.createdAt)) / 1000), warnings: last.warnings } : null,
      retention: this.retention,
      lock: lock === undefined ? "unknown" : lock,
      running: this.running,
      images: images ? images.map(summarizeImage) : null,
      runningImage: this.runningImage,
      startupRestore: this.startupRestore,
      errors,
      ...(recovery ?? { rpo: { lastBackupAgeSeconds: null, unprotectedChanges: true, nextBackupAt: null }, rto: { estimatedRestoreSeconds: null, basis: "unknown: the store did not answer in time" } }),
    };
  }

  /** RPO (what a loss now would cost) and RTO (how long restoring the newest snapshot would take). */
  async recoveryObjectives(last: Manifest | null): Promise<Pick<Status, "rpo" | "rto">> {
    const next = this.scheduler?.nextBackupAt?.() ?? null;
    return {
      rpo: {
        lastBackupAgeSeconds: last ? Math.floor((this.now().getTime() - Date.parse(last.createdAt)) / 1000) : null,
        unprotectedChanges: this.changeSignal?.() !== false,
        nextBackupAt: next ? next.toISOString() : null,
      },
      rto: estimateRestore(last, await readRestoreStats(this.storage, this.log), last && this.imageForRestore ? await this.imageForRestore(last).catch(() => null) : null),
    };
  }

  /** A restore drill of the snapshot into scratch collections (see lib/drill.ts); its result is kept with the snapshot. */
  async drill(idOrLatest: string): Promise<DrillResult> {
    const manifest = await this.get(idOrLatest);
    const result = await runDrill(this.chroma, this.storage, manifest, { log: this.log, now: this.now });
    if (result.checks.some((c) => c.name === "restore" && c.ok)) {
      await recordRestore(this.storage, { at: result.at, snapshot: manifest.id, kind: "drill", records: manifest.records, bytes: manifest.bytes, durationMs: result.durationMs }, this.log);
    }
    return result;
  }

  /** The recorded drill of a snapshot, or of every snapshot (by id). */
  drillOf(id: string): Promise<DrillResult | null> {
    return readDrill(this.storage, id, this.log);
  }

  drills(): Promise<Map<string, DrillResult>> {
    return readDrills(this.storage, this.log);
  }
}

/**
 * A signal that aborts with an OperationCancelledError when `signal` (the request's:
 * the client disconnected) aborts, so the engine stops with a typed error; undefined
 * without a signal.
 */
function cancelledBy(signal: AbortSignal | undefined, operation: string): AbortSignal | undefined {
  if (!signal) return undefined;
  const controller = new AbortController();
  const cancel = () => controller.abort(new OperationCancelledError(`the client disconnected: the ${operation} was cancelled and committed nothing`));
  if (signal.aborted) cancel();
  else signal.addEventListener("abort", cancel, { once: true });
  return controller.signal;
}

/** `promise`, or a rejection with `onTimeout()` after `ms` (the promise goes on, unobserved). */
function withinDeadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  promise.catch(() => {}); // a late failure is not an unhandled rejection
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

export interface Status {
  chroma: { url: string; reachable: boolean; version: string | null; collections: number | null; records: number | null };
  /** A figure is null when its part could not be read (see `errors`). */
  storage: { driver: string; prefix: string; snapshots: number | null; damagedSnapshots: { id: string; error: string }[]; signingKeyIds: string[]; chunks: number | null; storedBytes: number | null; logicalBytes: number | null };
  /** `warnings`: the newest snapshot's (a drop in records, writes during the backup). */
  lastBackup: { id: string; createdAt: string; ageSeconds: number; warnings: string[] } | null;
  retention: RetentionConfig;
  /** "unknown" when the store did not answer in time. */
  lock: LeaseInfo | null | "unknown";
  /** The backup or prune this instance is running. */
  running: RunningOperation | null;
  /** The restore images in the store, newest snapshot first; null when they could not be read. */
  images: ImageSummary[] | null;
  /** The restore image this instance is making. */
  runningImage: RunningImage | null;
  startupRestore: BackupService["startupRestore"];
  /** The parts that could not be read, and why. */
  errors: { part: string; message: string }[];
  rpo: { lastBackupAgeSeconds: number | null; unprotectedChanges: boolean; nextBackupAt: string | null };
  rto: RtoEstimate;
}
