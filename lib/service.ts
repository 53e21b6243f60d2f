import type { ChromaRest } from "./chroma/rest.js";
import type { Config, RetentionConfig } from "./config.js";
import { ChromaUnavailableError, NotFoundError, SnapshotCorruptError } from "./errors.js";
import { StoreLock, type LeaseInfo } from "./lock.js";
import { jsonLogger, type Logger } from "./log.js";
import { prune, type PruneResult } from "./prune.js";
import { SAFETY_TAG, type RetentionRules } from "./retention.js";
import { takeSnapshot, type ProgressEvent } from "./snapshot/backup.js";
import { readCatalog, readManifest } from "./snapshot/catalog.js";
import { ManifestKeys } from "./snapshot/signing.js";
import { manifestKey, summarize, type Manifest, type SnapshotSummary } from "./snapshot/manifest.js";
import { isAsideCollection, planRestore, restoreSnapshot } from "./snapshot/restore.js";
import { verifySnapshot, type VerifyReport } from "./snapshot/verify.js";
import { isNotFound } from "./storage/errors.js";
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
}

export interface BackupRequest {
  collections?: string[];
  /** Seconds: skip when the newest snapshot is younger than this. */
  ifOlderThan?: number;
  tag?: string;
}

export type BackupOutcome =
  | { skipped: true; reason: string; latest: SnapshotSummary }
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
  | { restored: false; reason: string; snapshot?: string; dryRun?: boolean; plan?: { name: string; from: string; records: number; action: string }[]; skipped?: { id: string; reason: string }[] };

export interface PruneRequest extends Omit<RetentionRules, "keepSafety"> {
  dryRun?: boolean;
  limit?: number;
  graceSeconds?: number;
}

export type StartupRestoreState = "none" | "running" | "failed" | "done" | "overridden";

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

  /** The service as a runtime builds it from configuration. */
  static fromConfig(config: Config, parts: Pick<ServiceOptions, "chroma" | "storage" | "log" | "holder">): BackupService {
    return new BackupService({ ...parts, storagePrefix: config.storage.prefix, retention: config.retention, backupMinIntervalSeconds: config.backupMinIntervalSeconds, lockTtlMs: config.lockTtlMs, signingKeys: config.signingKeys });
  }

  constructor(private readonly options: ServiceOptions) {
    this.chroma = options.chroma;
    this.storage = options.storage;
    this.log = options.log ?? jsonLogger;
    this.now = options.now ?? (() => new Date());
    this.lock = new StoreLock(options.storage, "maintenance", { ttlMs: options.lockTtlMs, now: () => this.now().getTime() });
    this.holder = options.holder ?? `chroma-backup-${Math.random().toString(16).slice(2, 10)}`;
    this.manifestKeys = new ManifestKeys(options.signingKeys, (snapshot, keyId) =>
      this.log("warn", "a signed manifest was read without SNAPSHOT_SIGNING_KEY: accepted on its checksum, its signature not checked (set the key to check it)", { snapshot, keyId }),
    );
  }

  get retention() {
    return this.options.retention;
  }

  /** Where the runtime's startup restore is ("none": this runtime has none). */
  startupRestore: { state: StartupRestoreState; detail?: string; since: string } = { state: "none", since: new Date().toISOString() };

  markStartupRestore(state: StartupRestoreState, detail?: string): void {
    this.startupRestore = { state, detail, since: this.now().toISOString() };
  }

  /** The newest snapshot that is not a pre-restore safety snapshot. */
  async latest(): Promise<Manifest | null> {
    const { snapshots } = await readCatalog(this.storage, this.manifestKeys);
    return snapshots.find((m) => m.tag !== SAFETY_TAG) ?? null;
  }

  async backup(request: BackupRequest = {}, onProgress?: (e: ProgressEvent) => void): Promise<BackupOutcome> {
    if (request.ifOlderThan !== undefined) {
      const latest = await this.latest();
      if (latest) {
        const age = (this.now().getTime() - Date.parse(latest.createdAt)) / 1000;
        if (age < request.ifOlderThan) {
          return { skipped: true, reason: `the newest snapshot is ${Math.round(age)}s old, younger than ${request.ifOlderThan}s`, latest: summarize(latest) };
        }
      }
    }
    const lease = await this.lock.acquire("backup", this.holder);
    try {
      const manifest = await takeSnapshot(this.chroma, this.storage, {
        collections: request.collections,
        tag: request.tag ?? null,
        onProgress,
        now: this.now,
        beforeCommit: () => lease.assertHeld(),
        signing: this.manifestKeys,
      });
      let retention: PruneResult | null = null;
      try {
        retention = await prune(this.storage, this.retention, { keys: this.manifestKeys });
      } catch (err) {
        // The snapshot is committed; a failed rotation is retried by the next one.
        this.log("warn", "retention after backup failed", { snapshot: manifest.id, error: (err as Error).message });
      }
      return { skipped: false, snapshot: summarize(manifest), manifest, retention };
    } finally {
      await lease.release();
    }
  }

  /**
   * The after-upload call: a backup only when the newest snapshot is older than
   * `minIntervalSeconds` (default BACKUP_MIN_INTERVAL, 1h).
   */
  backupIfDue(minIntervalSeconds = this.options.backupMinIntervalSeconds ?? 3600, request: Omit<BackupRequest, "ifOlderThan"> = {}): Promise<BackupOutcome> {
    return this.backup({ ...request, ifOlderThan: minIntervalSeconds });
  }

  async restore(request: RestoreRequest = {}, onProgress?: (e: ProgressEvent) => void): Promise<RestoreOutcome> {
    const started = this.now().getTime();
    const existing = (await this.chroma.listCollections()).filter((c) => !isAsideCollection(c.name));
    const skipped: { id: string; reason: string }[] = [];
    let manifest: Manifest;
    if ((request.snapshot ?? "latest") === "latest") {
      const { snapshots, damaged } = await readCatalog(this.storage, this.manifestKeys);
      const candidates = snapshots.filter((m) => m.tag !== SAFETY_TAG);
      // Ids sort by time: a damaged manifest newer than the newest good one was skipped.
      for (const d of damaged) if (!candidates[0] || d.id > candidates[0].id) skipped.push({ id: d.id, reason: d.error });
      if (!candidates[0]) return { restored: false, reason: "no snapshot", ...(skipped.length ? { skipped } : {}) };
      manifest = candidates[0];
      if (request.fallbackToVerified && !(request.ifEmpty && existing.length > 0)) {
        manifest = await this.newestVerified(candidates, skipped);
      }
    } else {
      manifest = await readManifest(this.storage, request.snapshot!, this.manifestKeys);
    }
    const plan = planRestore(manifest, request);
    const mode = request.mode ?? "replace";

    if (request.ifEmpty && existing.length > 0) {
      return { restored: false, reason: `Chroma already holds ${existing.length} collection(s); ifEmpty restores only into an empty Chroma`, snapshot: manifest.id };
    }
    const replaced = plan.filter((p) => existing.some((c) => c.name === p.target)).map((p) => p.target);
    if (request.dryRun) {
      return {
        restored: false,
        dryRun: true,
        reason: "dry run: nothing was changed",
        snapshot: manifest.id,
        plan: plan.map((p) => ({ name: p.target, from: p.entry.name, records: p.entry.records, action: replaced.includes(p.target) ? mode : "create" })),
      };
    }

    let safetySnapshot: string | null = null;
    if ((request.safetySnapshot ?? true) && replaced.length > 0) {
      const outcome = await this.backup({ collections: replaced, tag: SAFETY_TAG });
      if (!outcome.skipped) safetySnapshot = outcome.snapshot.id;
      this.log("info", "safety snapshot taken before restore", { snapshot: safetySnapshot, collections: replaced });
    }
    const restored = await restoreSnapshot(this.chroma, this.storage, manifest, { ...request, mode, onProgress, log: this.log });
    return {
      restored: true,
      snapshot: manifest.id,
      collections: restored.map((r) => ({ name: r.name, records: r.records })),
      safetySnapshot,
      durationMs: this.now().getTime() - started,
      ...(skipped.length ? { skipped } : {}),
    };
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

  async verify(idOrLatest: string, onChunk?: (done: number, total: number) => void): Promise<VerifyReport> {
    return verifySnapshot(this.storage, await this.get(idOrLatest), onChunk);
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

  async prune(request: PruneRequest = {}): Promise<PruneResult> {
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
    };
    if (request.dryRun) return prune(this.storage, rules, { dryRun: true, limit: request.limit, graceSeconds: request.graceSeconds, now: this.now, keys: this.manifestKeys });
    const lease = await this.lock.acquire("prune", this.holder);
    try {
      return await prune(this.storage, rules, { limit: request.limit, graceSeconds: request.graceSeconds, now: this.now, keys: this.manifestKeys });
    } finally {
      await lease.release();
    }
  }

  async status(): Promise<Status> {
    const chroma: Status["chroma"] = { url: this.chroma.url, reachable: false, version: null, collections: null, records: null };
    try {
      chroma.version = await this.chroma.version();
      chroma.reachable = true;
      const collections = (await this.chroma.listCollections()).filter((c) => !isAsideCollection(c.name));
      chroma.collections = collections.length;
      let records = 0;
      for (const c of collections) records += await this.chroma.count(c.id);
      chroma.records = records;
    } catch (err) {
      if (!(err instanceof ChromaUnavailableError)) throw err;
    }
    const catalog = await readCatalog(this.storage, this.manifestKeys);
    let chunks = 0;
    let storedBytes = 0;
    for await (const info of this.storage.list("")) {
      if (info.key.startsWith("chunks/")) chunks++;
      storedBytes += info.size ?? 0;
    }
    const last = catalog.snapshots.find((m) => m.tag !== SAFETY_TAG) ?? null;
    return {
      chroma,
      storage: {
        driver: this.storage.driver,
        prefix: this.options.storagePrefix,
        snapshots: catalog.snapshots.length,
        damagedSnapshots: catalog.damaged,
        signingKeyIds: this.manifestKeys.ids,
        chunks,
        storedBytes,
        logicalBytes: catalog.snapshots.reduce((n, m) => n + m.bytes, 0),
      },
      lastBackup: last ? { id: last.id, createdAt: last.createdAt, ageSeconds: Math.floor((this.now().getTime() - Date.parse(last.createdAt)) / 1000) } : null,
      retention: this.retention,
      lock: await this.lock.current(),
    };
  }

}

export interface Status {
  chroma: { url: string; reachable: boolean; version: string | null; collections: number | null; records: number | null };
  storage: { driver: string; prefix: string; snapshots: number; damagedSnapshots: { id: string; error: string }[]; signingKeyIds: string[]; chunks: number; storedBytes: number; logicalBytes: number };
  lastBackup: { id: string; createdAt: string; ageSeconds: number } | null;
  retention: RetentionConfig;
  lock: LeaseInfo | null;
}
