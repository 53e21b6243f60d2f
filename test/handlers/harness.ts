/**
 * What the handler and behaviour tests share: a store per driver, the service and app
 * wired exactly as the server wires them, a small request helper, and Chroma seeding.
 * No mocks: a real Chroma (startTestChroma) and the real fs and memory drivers.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Hono } from "hono";
import { expect } from "vitest";
import { createApp } from "../../handlers/app.js";
import type { AppEnv } from "../../handlers/context.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { silentLogger } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { addRecords, createCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";

export const TOKEN = "s3cret-token-0123456789abcdef";
export const VERSION = "9.8.7-test";
export const DRIVERS = ["fs", "memory"] as const;
/** A well-formed snapshot id no store holds. */
export const UNKNOWN_ID = "20200101T000000Z-abcd";
/** Every route that requires the bearer token. */
export const PROTECTED_ROUTES: readonly [string, string][] = [
  ["GET", "/status"],
  ["GET", "/backups"],
  ["POST", "/backups"],
  ["GET", "/backups/latest"],
  ["GET", `/backups/${UNKNOWN_ID}`],
  ["POST", "/backups/latest/verify"],
  ["DELETE", `/backups/${UNKNOWN_ID}`],
  ["POST", "/restore"],
  ["POST", "/prune"],
];
export type Driver = (typeof DRIVERS)[number];

export interface Store {
  driver: Driver;
  storage: Storage;
  /** The fs driver's root directory; null for memory. */
  root: string | null;
  cleanup(): Promise<void>;
}

export async function makeStore(driver: Driver): Promise<Store> {
  if (driver === "memory") return { driver, storage: memoryStorage(), root: null, cleanup: async () => {} };
  const root = await mkdtemp(join(tmpdir(), "handlers-store-"));
  return { driver, storage: fsStorage(root), root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export interface ServiceSetup {
  chromaUrl: string;
  storage: Storage;
  keepLast?: number;
  keepSafety?: number;
  now?: () => Date;
  chromaTimeoutMs?: number;
  backupMinIntervalSeconds?: number;
  /** SNAPSHOT_SIGNING_KEY's keys. */
  signingKeys?: string[];
}

export function makeService(s: ServiceSetup): BackupService {
  return new BackupService({
    chroma: new ChromaRest({ url: s.chromaUrl, timeoutMs: s.chromaTimeoutMs }),
    storage: s.storage,
    storagePrefix: "chromadb/",
    retention: { keepLast: s.keepLast ?? 24, keepSafety: s.keepSafety ?? 3 },
    log: silentLogger,
    now: s.now,
    backupMinIntervalSeconds: s.backupMinIntervalSeconds,
    signingKeys: s.signingKeys,
  });
}

export function makeApp(service: BackupService, extra: { maxBodyBytes?: number } = {}): Hono<AppEnv> {
  return createApp({ service, token: TOKEN, version: VERSION, log: silentLogger, ...extra });
}

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  // Response bodies are checked field by field against the contract; `any` keeps that readable.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

export interface RequestOptions {
  /** An object is sent as JSON; a string is sent as is. */
  body?: unknown;
  headers?: Record<string, string>;
  /** false: no Authorization header. */
  auth?: boolean;
}

/** Calls the app in process (app.request) with the bearer token and a JSON body. */
export function client(app: Hono<AppEnv>) {
  const call = async (method: string, path: string, options: RequestOptions = {}): Promise<Reply> => {
    const headers: Record<string, string> = {};
    if (options.auth !== false) headers.authorization = `Bearer ${TOKEN}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
      headers["content-type"] = "application/json";
    }
    Object.assign(headers, options.headers);
    const res = await app.request(path, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = undefined;
    if ((res.headers.get("content-type") ?? "").includes("application/json")) parsed = JSON.parse(text);
    return { status: res.status, headers: res.headers, text, body: parsed };
  };
  return {
    call,
    get: (path: string, options?: RequestOptions) => call("GET", path, options),
    post: (path: string, body?: unknown, options: RequestOptions = {}) => call("POST", path, { ...options, body }),
    del: (path: string, options?: RequestOptions) => call("DELETE", path, options),
  };
}
export type Client = ReturnType<typeof client>;

/** An NDJSON answer as parsed lines; every line must be JSON. */
export function ndjsonLines(reply: Reply): Record<string, unknown>[] {
  expect(reply.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
  const lines = reply.text.split("\n");
  expect(lines.at(-1), "the stream ends with a newline").toBe("");
  return lines.slice(0, -1).map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A 4xx/5xx answer in the API's error shape, with the code and a message matching `mentions`. */
export function expectError(reply: Reply, status: number, code: string, mentions?: RegExp): void {
  expect(reply.status, reply.text).toBe(status);
  expect(reply.headers.get("content-type")).toMatch(/application\/json/);
  expect(reply.body.error.code).toBe(code);
  expect(typeof reply.body.error.message).toBe("string");
  expect(reply.body.error.message.length).toBeGreaterThan(0);
  if (mentions) expect(reply.body.error.message).toMatch(mentions);
}

export interface CollectionSpec {
  name: string;
  count: number;
  dim: number;
  seed: number;
  metadataJson?: string;
  configurationJson?: string;
}

/** Leaves Chroma holding exactly these collections, freshly created. */
export async function resetChroma(url: string, specs: CollectionSpec[]): Promise<Record<string, string>> {
  const rest = new ChromaRest({ url });
  for (const name of await listCollectionNames(url)) await rest.deleteCollection(name);
  const ids: Record<string, string> = {};
  for (const s of specs) {
    ids[s.name] = await createCollection(url, s.name, s.configurationJson ?? '{"hnsw":{"space":"l2"}}', s.metadataJson ?? "null");
    await addRecords(url, ids[s.name]!, makeRecords(s.count, s.dim, s.seed, s.name));
  }
  return ids;
}
