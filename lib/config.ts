import { InvalidRequestError } from "./errors.js";
import { parseDuration } from "./duration.js";
import { MIN_SIGNING_KEY_LENGTH, splitSigningKeys } from "./snapshot/signing.js";
import { parseTargetLimits, type TargetLimitSettings } from "./snapshot/target-limits.js";
import { keyProblem } from "./storage/keys.js";

export type StorageDriverName = "fs" | "replit" | "s3" | "memory" | "r2";
export type RestoreOnStart = "if-empty" | "always" | "never";

export interface Config {
  port: number;
  /** Null: decided by the runtime (loopback when the token was generated). */
  host: string | null;
  token: string | null;
  dataDir: string;
  chroma: { url: string | null; tenant?: string; database?: string; apiKey?: string; /** CHROMA_TIMEOUT */ timeoutMs?: number; /** CHROMA_TARGET_LIMITS */ limits?: TargetLimitSettings };
  /** CHROMA_HOST, CHROMA_PORT: where the embedded Chroma is served to apps. */
  chromaServe: { host: string; port: number };
  storage: {
    driver: StorageDriverName;
    prefix: string;
    backupDir: string;
    replitBucketId?: string;
    s3?: { endpoint: string; bucket: string; region?: string; accessKeyId: string; secretAccessKey: string; forcePathStyle?: boolean };
    /** STORAGE_TIMEOUT: a storage call (or a stream) without progress for this long fails; retries stay within twice that. */
    timeoutMs?: number;
  };
  restoreOnStart: RestoreOnStart;
  backupMinIntervalSeconds: number;
  /** BACKUP_INTERVAL: automatic backups (when data changed) at most this often, seconds; null: off. */
  backupIntervalSeconds: number | null;
  /** BACKUP_ON_STOP_TIMEOUT: budget of the on-stop backup, seconds; 0: no on-stop backup. */
  backupOnStopTimeoutSeconds: number;
  /** DRILL_INTERVAL: scheduled restore drills of the newest snapshot, seconds; null: off (the default). */
  drillIntervalSeconds: number | null;
  /** Restore images (API.md "Restore images"); only used with the embedded Chroma. */
  images: {
    /** IMAGES: make and use restore images (default on; the embedded Chroma only). */
    enabled: boolean;
    /** IMAGE_KEEP: newest images kept by prune (default 1). */
    keep: number;
    /** IMAGE_INTERVAL: make a new image after a backup when the newest is older, seconds (default 24h). */
    intervalSeconds: number;
  };
  retention: RetentionConfig;
  /** LOCK_TTL: a backup or prune lease not renewed for this long is taken over (its holder died). */
  lockTtlMs?: number;
  /** SNAPSHOT_SIGNING_KEY: keys that sign (the first) and verify manifests; empty: manifests are checksummed, not signed. */
  signingKeys: string[];
}

/** Default retention: the keepLast/keepSafety of API.md, plus optional calendar rules for scheduled prunes. */
export interface RetentionConfig {
  keepLast: number;
  keepSafety: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  /** Seconds. */
  keepWithin?: number;
  /** RETENTION_KEEP_BEFORE_DROP, seconds: keep the snapshot from before a drop this long; 0: off. */
  keepBeforeDrop?: number;
}

export type Env = Record<string, string | undefined>;

function fail(name: string, why: string): never {
  throw new InvalidRequestError(`configuration: ${name} ${why}`, { variable: name });
}

function targetLimitsVar(env: Env, name: string): TargetLimitSettings | undefined {
  try {
    return env[name] ? parseTargetLimits(env[name]) : undefined;
  } catch (err) {
    return fail(name, (err as Error).message);
  }
}

function intVar(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) fail(name, `must be a whole number, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/** STORAGE_TIMEOUT, CHROMA_TIMEOUT: a duration of at least 1s, default 60s; in ms. */
function timeoutVar(env: Env, name: string): number {
  const ms = Math.round(parseDuration(env[name] || "60s", name) * 1000);
  if (ms < 1000) fail(name, `must be at least 1s, got ${JSON.stringify(env[name])}`);
  return ms;
}

function optionalInt(env: Env, name: string): number | undefined {
  return env[name] === undefined || env[name] === "" ? undefined : intVar(env, name, 0);
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!allowed.includes(raw as T)) fail(name, `must be one of ${allowed.join(", ")}, got ${JSON.stringify(raw)}`);
  return raw as T;
}

/** A duration variable that `off` (or 0) turns off: null then. */
/** DRILL_INTERVAL in seconds ("6h", "1d", seconds); null when unset or "off" (the default). */
export function drillIntervalSeconds(env: Env): number | null {
  return optionalDuration(env, "DRILL_INTERVAL", "off");
}

function optionalDuration(env: Env, name: string, fallback: string): number | null {
  const raw = env[name] || fallback;
  if (/^\s*off\s*$/i.test(raw)) return null;
  const seconds = parseDuration(raw, name);
  return seconds > 0 ? seconds : null;
}

/** True on Replit (where the default store is Replit Object Storage). */
export function onReplit(env: Env): boolean {
  return Boolean(env.REPL_ID || env.REPLIT_DEPLOYMENT || env.REPLIT_DB_URL);
}

/** Reads the environment names of API.md; every mistake is reported by variable name. */
export function loadConfig(env: Env, join: (...parts: string[]) => string = (...p) => p.join("/")): Config {
  const dataDir = env.DATA_DIR || "./data";
  const driver = oneOf<StorageDriverName>(env, "STORAGE", ["fs", "replit", "s3", "memory", "r2"], onReplit(env) ? "replit" : "fs");
  const config: Config = {
    port: intVar(env, "PORT", 8080),
    host: env.HOST || null,
    token: env.BACKUP_API_TOKEN || null,
    dataDir,
    chroma: {
      url: env.CHROMA_URL || null,
      tenant: env.CHROMA_TENANT || undefined,
      database: env.CHROMA_DATABASE || undefined,
      apiKey: env.CHROMA_API_KEY || undefined,
      timeoutMs: timeoutVar(env, "CHROMA_TIMEOUT"),
      limits: targetLimitsVar(env, "CHROMA_TARGET_LIMITS"),
    },
    chromaServe: { host: env.CHROMA_HOST || "127.0.0.1", port: intVar(env, "CHROMA_PORT", 8000) },
    storage: {
      driver,
      prefix: env.STORAGE_PREFIX ?? "chromadb/",
      backupDir: env.BACKUP_DIR || join(dataDir, "backups"),
      replitBucketId: env.REPLIT_BUCKET_ID || undefined,
      timeoutMs: timeoutVar(env, "STORAGE_TIMEOUT"),
    },
    restoreOnStart: oneOf<RestoreOnStart>(env, "RESTORE_ON_START", ["if-empty", "always", "never"], "if-empty"),
    backupMinIntervalSeconds: parseDuration(env.BACKUP_MIN_INTERVAL || "1h", "BACKUP_MIN_INTERVAL"),
    backupIntervalSeconds: optionalDuration(env, "BACKUP_INTERVAL", "1h"),
    backupOnStopTimeoutSeconds: optionalDuration(env, "BACKUP_ON_STOP_TIMEOUT", "30s") ?? 0,
    drillIntervalSeconds: drillIntervalSeconds(env),
    images: {
      enabled: oneOf(env, "IMAGES", ["on", "off"], "on") === "on",
      keep: intVar(env, "IMAGE_KEEP", 1),
      intervalSeconds: parseDuration(env.IMAGE_INTERVAL || "24h", "IMAGE_INTERVAL"),
    },
    signingKeys: splitSigningKeys(env.SNAPSHOT_SIGNING_KEY ?? ""),
    lockTtlMs: Math.round(parseDuration(env.LOCK_TTL || "60s", "LOCK_TTL") * 1000),
    retention: {
      keepLast: intVar(env, "RETENTION_KEEP_LAST", 24),
      keepSafety: intVar(env, "RETENTION_KEEP_SAFETY", 3),
      keepHourly: optionalInt(env, "RETENTION_KEEP_HOURLY"),
      keepDaily: optionalInt(env, "RETENTION_KEEP_DAILY"),
      keepWeekly: optionalInt(env, "RETENTION_KEEP_WEEKLY"),
      keepMonthly: optionalInt(env, "RETENTION_KEEP_MONTHLY"),
      keepWithin: env.RETENTION_KEEP_WITHIN ? parseDuration(env.RETENTION_KEEP_WITHIN, "RETENTION_KEEP_WITHIN") : undefined,
      keepBeforeDrop: optionalDuration(env, "RETENTION_KEEP_BEFORE_DROP", "30d") ?? 0,
    },
  };
  const short = config.signingKeys.findIndex((k) => k.length < MIN_SIGNING_KEY_LENGTH);
  if (short >= 0) {
    const which = config.signingKeys.length > 1 ? ` (key ${short + 1} of ${config.signingKeys.length} has ${config.signingKeys[short]!.length})` : ` (it has ${config.signingKeys[short]!.length})`;
    fail("SNAPSHOT_SIGNING_KEY", `must be at least ${MIN_SIGNING_KEY_LENGTH} characters per key${which}; generate one with \`openssl rand -hex 32\` (several keys: separated by commas or spaces, the first signs)`);
  }
  if (config.lockTtlMs! < 1000) fail("LOCK_TTL", `must be at least 1s, got ${JSON.stringify(env.LOCK_TTL)}`);
  if (config.chroma.url && !/^https?:\/\/[^/]/.test(config.chroma.url)) fail("CHROMA_URL", `must be an http(s) URL, got ${JSON.stringify(config.chroma.url)}`);
  // Every key is prefix + key, checked by every driver: a prefix they refuse would fail every request.
  const prefixProblem = config.storage.prefix === "" ? null : keyProblem(config.storage.prefix.replace(/\/$/, ""));
  if (config.storage.prefix.startsWith("/") || config.storage.prefix.includes("..") || prefixProblem) {
    fail("STORAGE_PREFIX", `must be a relative key prefix such as chromadb/${prefixProblem ? ` (it ${prefixProblem})` : ""}`);
  }
  if (driver === "s3") {
    const missing = ["S3_ENDPOINT", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"].filter((n) => !env[n]);
    if (missing.length > 0) fail(missing.join(", "), "must be set when STORAGE=s3");
    config.storage.s3 = {
      endpoint: env.S3_ENDPOINT!,
      bucket: env.S3_BUCKET!,
      region: env.S3_REGION || undefined,
      accessKeyId: env.S3_ACCESS_KEY_ID!,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY!,
      forcePathStyle: env.S3_FORCE_PATH_STYLE === undefined ? undefined : /^(1|true|yes)$/i.test(env.S3_FORCE_PATH_STYLE),
    };
  }
  return config;
}
