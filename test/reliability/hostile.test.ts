/**
 * Hostile input over HTTP and at the storage boundary (issue "Reliability and security").
 *
 * 1. Property-based fuzzing (fast-check) of every route with random bodies, queries, path
 *    ids, headers and content types, against a real Chroma and the fs store: never a 5xx,
 *    every 4xx in the API's error shape naming what is wrong, and a rejected request leaves
 *    every byte on disk (inside the store and around it) and every Chroma collection as it was.
 * 2. Path traversal wherever a key is built from input: the routes with :id, the restore
 *    `snapshot` field, every storage driver operation (a sentinel file outside the fs root
 *    stays untouched), STORAGE_PREFIX.
 * 3. Bodies over the limit: 413 in the JSON error shape, with and without Content-Length,
 *    in process and through a real HTTP server, without reading the whole body.
 * 4. Auth: every route but /health refuses tokens derived from the right one; the token
 *    never appears in a log line or a response, through 4xx, 5xx and NDJSON failures.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join, relative, resolve, sep } from "node:path";
import { serve, type ServerType } from "@hono/node-server";
import fc from "fast-check";
import type { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../handlers/app.js";
import type { AppEnv } from "../../handlers/context.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { loadConfig } from "../../lib/config.js";
import { InvalidRequestError } from "../../lib/errors.js";
import { StoreLock } from "../../lib/lock.js";
import type { LogFields, LogLevel, Logger } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { readManifest } from "../../lib/snapshot/catalog.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import { StorageError } from "../../lib/storage/errors.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { keyProblem } from "../../lib/storage/keys.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { r2Storage, type R2BucketLike } from "../../lib/storage/r2.js";
import { s3Storage } from "../../lib/storage/s3.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { PROTECTED_ROUTES, resetChroma, TOKEN, UNKNOWN_ID } from "../handlers/harness.js";

const ALPHA = { name: "alpha", count: 30, dim: 4, seed: 31 };
const BETA = { name: "beta", count: 20, dim: 4, seed: 32 };
const MiB = 1024 * 1024;

let chroma: TestChroma;
let rest: ChromaRest;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
  await resetChroma(chroma.url, [ALPHA, BETA]);
}, 120_000);

afterAll(async () => {
  await chroma?.close();
});

// ---------------------------------------------------------------------------------------
// a world: an fs store inside a parent folder that also holds sentinels, the service, the app

interface World {
  /** Parent folder: the store's root is `parent/store`, sentinels live next to it. */
  parent: string;
  root: string;
  storage: Storage;
  service: BackupService;
  app: Hono<AppEnv>;
  token: string;
  logs: string[];
  cleanup(): Promise<void>;
}

/** A logger that keeps every line as the JSON the real logger would print. */
function capturingLogger(lines: string[]): Logger {
  return (level: LogLevel, message: string, fields: LogFields = {}) => {
    lines.push(JSON.stringify({ level, message, ...fields }));
  };
}

async function makeWorld(options: { token?: string; maxBodyBytes?: number; wrap?: (s: Storage) => Storage } = {}): Promise<World> {
  const parent = await mkdtemp(join(tmpdir(), "hostile-"));
  const root = join(parent, "store");
  await mkdir(root);
  // What a traversal would reach: a sentinel and a decoy manifest one level above the root,
  // and one above the prefix (the store writes under chromadb/).
  await writeFile(join(parent, "sentinel.txt"), "outside the store: must never change\n");
  await mkdir(join(parent, "snapshots"));
  await writeFile(join(parent, "snapshots", `${UNKNOWN_ID}.json`), "decoy manifest outside the store\n");
  await writeFile(join(root, "sentinel-above-prefix.txt"), "above the prefix: must never change\n");
  const logs: string[] = [];
  const log = capturingLogger(logs);
  const storage = withPrefix((options.wrap ?? ((s) => s))(fsStorage(root)), "chromadb/");
  const service = new BackupService({
    chroma: new ChromaRest({ url: chroma.url, timeoutMs: 10_000 }),
    storage,
    storagePrefix: "chromadb/",
    retention: { keepLast: 24, keepSafety: 3 },
    log,
  });
  const token = options.token ?? TOKEN;
  const app = createApp({ service, token, version: "hostile-test", log, maxBodyBytes: options.maxBodyBytes });
  return { parent, root, storage, service, app, token, logs, cleanup: () => rm(parent, { recursive: true, force: true }) };
}

/** Every file under the parent folder (the store, the sentinels, .partial) with a digest of its bytes. */
async function diskState(parent: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else out[relative(parent, path)] = createHash("sha256").update(await readFile(path)).digest("hex");
    }
  };
  await walk(parent);
  return out;
}

/** Chroma's collections: name -> id and record count (a replaced collection gets a new id). */
async function chromaState(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const c of await rest.listCollections()) out[c.name] = `${c.id}:${await rest.count(c.id)}`;
  return out;
}

async function bothStates(w: World): Promise<{ disk: Record<string, string>; chroma: Record<string, string> }> {
  return { disk: await diskState(w.parent), chroma: await chromaState() };
}

/** Leaves Chroma with alpha and beta only (accepted restores may add renamed copies). */
async function tidyChroma(): Promise<void> {
  for (const c of await rest.listCollections()) if (c.name !== "alpha" && c.name !== "beta") await rest.deleteCollection(c.name);
}

// ---------------------------------------------------------------------------------------
// requests and what every answer must look like

interface HostileRequest {
  method: string;
  /** Sent as is: already encoded, or deliberately not. */
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

async function send(app: Hono<AppEnv>, req: HostileRequest): Promise<Answer> {
  const res = await app.request(req.path, { method: req.method, headers: req.headers, body: req.body as BodyInit | undefined });
  const text = await res.text();
  let body: unknown;
  if (/application\/json/.test(res.headers.get("content-type") ?? "")) body = JSON.parse(text);
  return { status: res.status, headers: res.headers, text, body };
}

const CODES: Record<number, string> = { 400: "invalid_request", 401: "unauthorized", 404: "not_found", 409: "conflict", 413: "payload_too_large", 422: "snapshot_corrupt" };
/** What a message must mention for the caller to see what is wrong. */
const NAMES: Record<number, RegExp> = {
  400: /body|query|path id|JSON|Content-Type|collection|snapshot id|rename|key/i,
  401: /token|Authorization/,
  404: /no snapshot|no route|has no collection/,
  409: /running|lock/,
  413: /larger than \d+ bytes/,
  422: /chunk|manifest/,
};

/** One error object (a JSON answer's, or an NDJSON error line's) in the API's shape. */
function expectApiError(status: number, error: { code?: unknown; message?: unknown; details?: unknown } | undefined, what: string): void {
  expect(status, what).toBeLessThan(500);
  expect(CODES[status], `${what}: an unexpected status`).toBeDefined();
  expect(error?.code, what).toBe(CODES[status]);
  expect(typeof error?.message, what).toBe("string");
  expect(error!.message as string, what).toMatch(NAMES[status]!);
  if (status === 400 && Array.isArray(error!.details)) {
    for (const d of error!.details as { path?: unknown; message?: unknown }[]) {
      expect(typeof d.path, what).toBe("string");
      expect(typeof d.message, what).toBe("string");
    }
  }
}

/** Checks an answer; returns whether the request was refused (then nothing may have changed). */
function judge(req: HostileRequest, r: Answer): boolean {
  const what = `${req.method} ${req.path} ${JSON.stringify(req.headers)} ${typeof req.body === "string" ? req.body.slice(0, 200) : req.body ? `<${req.body.byteLength} bytes>` : ""} -> ${r.status} ${r.text.slice(0, 300)}`;
  expect(r.status, what).toBeLessThan(500);
  if (r.status >= 400) {
    expect(r.headers.get("content-type"), what).toMatch(/^application\/json/);
    expectApiError(r.status, r.body?.error, what);
    return true;
  }
  if (/application\/x-ndjson/.test(r.headers.get("content-type") ?? "")) {
    const lines = r.text.split("\n");
    expect(lines.at(-1), what).toBe("");
    const events = lines.slice(0, -1).map((l) => JSON.parse(l) as { event: string; status?: number; error?: { code?: unknown; message?: unknown } });
    const last = events.at(-1)!;
    expect(["done", "error"], what).toContain(last.event);
    if (last.event === "error") {
      expectApiError(last.status!, last.error, what);
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// generators

/** Path segments sent as is: encoded traversal, NUL, absolute paths, odd encodings, unicode. */
const TRAVERSAL_SEGMENTS = [
  "..%2F..%2Fetc%2Fpasswd",
  "..%2f..%2fsentinel.txt",
  "..%2F..%2Fsnapshots%2F" + UNKNOWN_ID,
  "%2e%2e",
  "%2E%2E%2F%2E%2E%2Fsentinel.txt",
  "%2e%2e%5c%2e%2e%5csentinel.txt",
  "..%5C..%5Csentinel.txt",
  "%252e%252e%252fsentinel.txt",
  "%C0%AE%C0%AE%2F",
  "%00",
  `${UNKNOWN_ID}%00`,
  `${UNKNOWN_ID}%00.json`,
  `${UNKNOWN_ID}%2F..%2F..%2Fsentinel.txt`,
  `..%2F${UNKNOWN_ID}`,
  "%2Fetc%2Fpasswd",
  "%2F",
  "C:%5Cwindows%5Cwin.ini",
  "snapshots%2F" + UNKNOWN_ID,
  UNKNOWN_ID + ".json",
  "latest%00",
  "LATEST",
  "%20latest",
  "%E2%80%AE" + UNKNOWN_ID,
  "%F0%9F%98%80",
  "%",
  "%zz",
  "%E0%A4%A",
  "....%2F%2F",
  "~",
  "%7E%2F.ssh",
];
/** Raw forms: the URL parser resolves these to other paths (another route, or none). */
const RAW_TRAVERSAL = ["../../etc/passwd", "..", ".", "/etc/passwd", "a/b", "..\\..\\sentinel.txt", "\u0000", "日本語", "\u202e"];

/** A path id: a real one, latest, unknown, hostile, or random unicode (encoded). */
function pathId(real: () => string): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constantFrom(...TRAVERSAL_SEGMENTS) },
    { weight: 1, arbitrary: fc.constantFrom(...RAW_TRAVERSAL) },
    { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 30 }).map(encodeURIComponent) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }).map(encodeURIComponent) },
    { weight: 2, arbitrary: fc.constantFrom("$REAL", "latest", UNKNOWN_ID, `${UNKNOWN_ID.slice(0, -1)}g`) },
  ).map((s) => (s === "$REAL" ? real() : s));
}

/** Strings meant to break something: traversal, control characters, huge, unicode. */
const hostileString = fc.oneof(
  fc.constantFrom("../x", "..\\x", "/etc/passwd", "a\u0000b", "%2e%2e%2f", "..", "", " ", "\u202e", "日本語", "🚀", "\uFEFF", "\ud800", "null", "latest", UNKNOWN_ID, `${UNKNOWN_ID}/../x`, "$(rm -rf /)", "<script>", "a".repeat(513), "t".repeat(65)),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constant("x".repeat(200_000)),
);
const extremeNumber = fc.constantFrom(0, -0, -1, 0.5, 1e-300, 5e-324, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e21, 1e308, -1e308, Number.MAX_SAFE_INTEGER);
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  hostileString,
  extremeNumber,
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(null, true, false, [], {}, [null], { __proto__: null }, { constructor: { prototype: { polluted: true } } }),
);
/** Valid values per field (every route's body fields); fuzzed bodies mix them with hostile ones. */
const backupFields = {
  collections: fc.constantFrom(["alpha"], ["beta"], ["alpha", "beta"], ["no-such-collection"]),
  ifOlderThan: fc.constantFrom("1h", "0s", 0, 3600, "7d", "1.5m"),
  tag: fc.constantFrom("nightly", "fuzz", "a.b-c_d"),
};
const restoreFields = {
  snapshot: fc.constantFrom("latest", "$REAL", UNKNOWN_ID),
  collections: fc.constantFrom(["alpha"], ["beta"], ["gamma"]),
  rename: fc.constantFrom({ alpha: "alpha-fuzz" }, { beta: "beta-fuzz" }, { alpha: "beta" }, { gamma: "delta" }),
  mode: fc.constantFrom("replace", "merge"),
  ifEmpty: fc.boolean(),
  safetySnapshot: fc.boolean(),
  dryRun: fc.constantFrom(true, true, false),
  fallbackToVerified: fc.boolean(),
};
const count = fc.oneof(fc.nat(30), extremeNumber);
const duration = fc.constantFrom("1h", "0s", "7d", 60, "99999999999999999999999d", 1e308);
const pruneFields = {
  keepLast: count,
  keepHourly: count,
  keepDaily: count,
  keepWeekly: count,
  keepMonthly: count,
  keepWithin: duration,
  keepTags: fc.constantFrom(["nightly"], ["pre-restore"], []),
  dryRun: fc.boolean(),
  limit: count,
  grace: duration,
};

/** Each field valid most of the time, hostile otherwise. */
function mixed(fields: Record<string, fc.Arbitrary<unknown>>): Record<string, fc.Arbitrary<unknown>> {
  return Object.fromEntries(Object.entries(fields).map(([k, valid]) => [k, fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: hostileValue })]));
}

/** A JSON object of some of these fields, sometimes with a stray (or case-changed) key. */
function objectBody(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Record<string, unknown>> {
  const names = Object.keys(fields);
  return fc
    .tuple(
      fc.record(fields, { requiredKeys: [] }),
      fc.option(fc.tuple(fc.oneof(fc.constantFrom("__proto__", "constructor", "extra", ...names.map((n) => n.toUpperCase())), fc.string({ maxLength: 10 })), hostileValue), { freq: 4 }),
    )
    .map(([obj, stray]) => {
      const out: Record<string, unknown> = { ...obj };
      if (stray) Object.defineProperty(out, stray[0], { value: stray[1], enumerable: true, configurable: true, writable: true });
      return out;
    });
}

/** Raw bodies that are not a JSON object, or not JSON, or not even UTF-8. */
const SPECIAL_BODIES: (string | Uint8Array)[] = [
  "",
  "   \n\t",
  "null",
  "[]",
  '"latest"',
  "42",
  "{",
  '{"tag":',
  '{"tag":"a","tag":"b"}',
  "\uFEFF{}",
  "[".repeat(50_000) + "]".repeat(50_000),
  '{"a":'.repeat(20_000) + "1" + "}".repeat(20_000),
  '{"collections":' + "[".repeat(20_000) + "]".repeat(20_000) + "}",
  '{"keepLast":1e400}',
  '{"keepLast":-0}',
  '{"ifOlderThan":1e400}',
  '{"__proto__":{"polluted":true}}',
  "snapshot=latest&dryRun=true",
  new Uint8Array([0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]), // UTF-16 "{}"
  new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]), // invalid UTF-8 inside a key
  new Uint8Array([0x1f, 0x8b, 0x08, 0x00]), // a gzip header
];

function bodyOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<string | Uint8Array | undefined> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.record(fields, { requiredKeys: [] }).map((o) => JSON.stringify(o)) },
    { weight: 6, arbitrary: objectBody(mixed(fields)).map((o) => JSON.stringify(o)) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 2, arbitrary: fc.constantFrom(...SPECIAL_BODIES) },
  );
}

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 });
const headersArb: fc.Arbitrary<Record<string, string>> = fc
  .record(
    {
      "content-type": fc.oneof(
        { weight: 6, arbitrary: fc.constant("application/json") },
        {
          weight: 3,
          arbitrary: fc.constantFrom("application/json; charset=utf-8", "application/vnd.api+json", "APPLICATION/JSON", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "application/json; charset=utf-16", "", "*/*"),
        },
        { weight: 1, arbitrary: printable },
      ),
      accept: fc.oneof(fc.constantFrom("application/json", "application/x-ndjson", "*/*", "text/html", "application/x-ndjson;q=0.1, application/json"), printable),
      "x-request-id": fc.oneof(printable, fc.constant("r".repeat(300)), fc.constant("../../etc/passwd")),
      "x-forwarded-for": printable,
      "content-encoding": fc.constantFrom("gzip", "br", "identity"),
      "x-http-method-override": fc.constantFrom("DELETE", "PUT"),
      cookie: printable,
      range: fc.constantFrom("bytes=0-0", "bytes=-1"),
    },
    { requiredKeys: [] },
  )
  .map((h) => h as Record<string, string>);

/** A query string: known and unknown keys, repeated keys, hostile values, raw or encoded. */
const queryArb = fc
  .array(
    fc.tuple(
      fc.oneof(fc.constantFrom("tag", "limit", "TAG", "tag[]", "__proto__", "constructor", "bogus", ""), fc.string({ maxLength: 8 })),
      fc.oneof(fc.constantFrom("nightly", "1", "0", "999999", "-1", "1e3", "abc", "../x", "%00", "%zz", "", "x".repeat(5000)), fc.string({ unit: "grapheme", maxLength: 12 })),
      fc.boolean(),
    ),
    { maxLength: 4 },
  )
  .map((pairs) => (pairs.length === 0 ? "" : "?" + pairs.map(([k, v, raw]) => (raw ? `${k}=${v}` : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join("&")));

// ---------------------------------------------------------------------------------------
// 1. every route, fuzzed

interface RouteSpec {
  name: string;
  method: string;
  /** Builds the path from a path id (ignored by routes without :id). */
  path: (id: string) => string;
  body: fc.Arbitrary<string | Uint8Array | undefined> | null;
  /** Answers that change nothing even when accepted. */
  readOnly: boolean;
  runs: number;
}

const ROUTES: RouteSpec[] = [
  { name: "GET /health", method: "GET", path: () => "/health", body: null, readOnly: true, runs: 60 },
  { name: "GET /status", method: "GET", path: () => "/status", body: null, readOnly: true, runs: 60 },
  { name: "GET /backups", method: "GET", path: () => "/backups", body: null, readOnly: true, runs: 100 },
  { name: "GET /backups/:id", method: "GET", path: (id) => `/backups/${id}`, body: null, readOnly: true, runs: 100 },
  { name: "POST /backups", method: "POST", path: () => "/backups", body: bodyOf(backupFields), readOnly: false, runs: 80 },
  { name: "POST /backups/:id/verify", method: "POST", path: (id) => `/backups/${id}/verify`, body: bodyOf({}), readOnly: true, runs: 80 },
  { name: "DELETE /backups/:id", method: "DELETE", path: (id) => `/backups/${id}`, body: bodyOf({}), readOnly: false, runs: 80 },
  { name: "POST /restore", method: "POST", path: () => "/restore", body: bodyOf(restoreFields), readOnly: false, runs: 80 },
  { name: "POST /prune", method: "POST", path: () => "/prune", body: bodyOf(pruneFields), readOnly: false, runs: 80 },
];

describe("every route, fuzzed (fast-check): no 5xx, errors name the problem, a refused request changes nothing", () => {
  let w: World;
  const tally: Record<string, Record<string, number>> = {};

  beforeAll(async () => {
    w = await makeWorld();
    for (let i = 0; i < 2; i++) expect((await send(w.app, { method: "POST", path: "/backups", headers: { authorization: `Bearer ${w.token}`, "content-type": "application/json" }, body: '{"force":true}' })).status).toBe(201);
  });
  afterAll(async () => {
    await w?.cleanup();
    await tidyChroma();
    console.info(`[hostile] fuzz answers by route and status: ${JSON.stringify(tally)}`);
  });

  /** A real snapshot id (one is taken if a delete or prune left none). */
  let realIds: string[] = [];
  const real = () => realIds[0] ?? UNKNOWN_ID;

  for (const route of ROUTES) {
    it(`${route.name}`, async () => {
      tally[route.name] = {};
      const snaps = await w.service.list();
      if (snaps.length === 0) await w.service.backup({});
      realIds = (await w.service.list()).map((s) => s.id);
      const replaceReal = (s: string | Uint8Array | undefined) => (typeof s === "string" ? s.replaceAll("$REAL", real()) : s);
      await fc.assert(
        fc.asyncProperty(pathId(real), queryArb, headersArb, route.body ?? fc.constant(undefined), async (id, query, headers, body) => {
          const req: HostileRequest = {
            method: route.method,
            path: route.path(id) + query,
            headers: { ...headers, ...(route.name === "GET /health" ? {} : { authorization: `Bearer ${w.token}` }) },
            body: replaceReal(body),
          };
          const before = await bothStates(w);
          const r = await send(w.app, req);
          const refused = judge(req, r);
          const kind = `${r.status}${/ndjson/.test(r.headers.get("content-type") ?? "") ? (refused ? "+ndjson-error" : "+ndjson-done") : ""}${r.body?.restored === true ? "+restored" : ""}`;
          tally[route.name]![kind] = (tally[route.name]![kind] ?? 0) + 1;
          if (refused || route.readOnly) {
            const after = await bothStates(w);
            expect(after.disk, `${req.method} ${req.path}: the store (and what is around it) changed`).toEqual(before.disk);
            expect(after.chroma, `${req.method} ${req.path}: Chroma changed`).toEqual(before.chroma);
          }
          if (route.name === "GET /health" && r.status === 200) expect(r.body).toEqual({ ok: true, version: "hostile-test" });
          // A delete or prune that went through: keep a real id to aim at.
          if (!refused && (route.method === "DELETE" || route.name === "POST /prune")) {
            realIds = (await w.service.list()).map((s) => s.id);
            if (realIds.length === 0) {
              const outcome = await w.service.backup({});
              if (!outcome.skipped) realIds = [outcome.snapshot.id];
            }
          }
        }),
        { numRuns: route.runs, endOnFailure: true },
      );
      // Accepted restores may have added renamed copies; the next route starts from alpha and beta.
      await tidyChroma();
    }, 120_000);
  }

  it("any method on any path: 404 in the error shape, or the route's own answer; never a 5xx", async () => {
    const paths = ["/health", "/status", "/backups", `/backups/${UNKNOWN_ID}`, `/backups/${UNKNOWN_ID}/verify`, "/restore", "/prune", "/", "/backups/", "/backups//verify", "/api/v2/heartbeat", "/HEALTH", "/health/", "/status.json"];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"), fc.constantFrom(...paths), queryArb, async (method, path, query) => {
        const req: HostileRequest = { method, path: path + query, headers: { authorization: `Bearer ${w.token}`, "content-type": "application/json" }, body: method === "GET" ? undefined : '{"dryRun":true}' };
        const before = await diskState(w.parent);
        const r = await send(w.app, req);
        judge(req, r);
        if (r.status >= 400 || method === "GET") expect(await diskState(w.parent)).toEqual(before);
      }),
      { numRuns: 60, endOnFailure: true },
    );
  });
});

// ---------------------------------------------------------------------------------------
// 2. traversal: routes, the restore snapshot field, every driver, STORAGE_PREFIX

/** Keys no driver may accept, and the problem keyProblem names for them. */
const BAD_KEYS = [
  "../sentinel.txt",
  "../../sentinel.txt",
  "a/../../sentinel.txt",
  "chromadb/../../sentinel.txt",
  "../snapshots/" + UNKNOWN_ID + ".json",
  "/etc/passwd",
  "/sentinel.txt",
  "..\\sentinel.txt",
  "a\\..\\..\\sentinel.txt",
  "C:\\windows\\win.ini",
  "nul\u0000byte",
  "snapshots/x.json\u0000.txt",
  "\u0000",
  "a//b",
  "trailing/",
  "",
  ".",
  "..",
  "./a",
  "a/.",
  "a/./b",
  "a/..",
  "\u0001ctrl",
  "line\nbreak",
  "del\u007f",
  "x".repeat(1025),
];

describe("path traversal wherever a key is built from input", () => {
  it("every route with :id, and the restore snapshot field: 400 or 404, nothing outside (or inside) the store touched", async () => {
    const w = await makeWorld();
    try {
      const auth = { authorization: `Bearer ${w.token}` };
      const snap = (await send(w.app, { method: "POST", path: "/backups", headers: auth })).body.id as string;
      const before = await bothStates(w);
      const segments = [...TRAVERSAL_SEGMENTS, ...RAW_TRAVERSAL, `${snap}%2F..%2F..%2F..%2Fsentinel.txt`, `..%2F..%2Fchromadb%2Fsnapshots%2F${snap}`, `${snap}%00`, encodeURIComponent(`${snap}/../${snap}`), `${snap}.json`];
      let answers = 0;
      for (const seg of segments) {
        for (const [method, path] of [
          ["GET", `/backups/${seg}`],
          ["POST", `/backups/${seg}/verify`],
          ["DELETE", `/backups/${seg}`],
        ] as const) {
          const req = { method, path, headers: auth };
          const r = await send(w.app, req);
          // The URL parser resolves "/backups/%2e%2e" to "/": that GET is the dashboard page, which holds no data.
          if (method === "GET" && new URL(`http://x${path}`).pathname === "/") {
            expect(r.headers.get("content-type"), path).toMatch(/^text\/html/);
            continue;
          }
          expect(judge(req, r), `${method} ${path} -> ${r.status} ${r.text}`).toBe(true);
          expect([400, 404], `${method} ${path}`).toContain(r.status);
          answers++;
        }
      }
      const snapshotValues = ["../x", "..\\x", "/etc/passwd", "a\u0000b", "%2e%2e%2fsentinel", `${snap}/../../sentinel.txt`, `../${snap}`, `${snap}\u0000`, `${snap}.json`, `snapshots/${snap}`, "..", ".", "", " latest", "LATEST", "latest/..", UNKNOWN_ID.replace("Z", "z")];
      for (const snapshot of snapshotValues) {
        for (const extra of [{}, { dryRun: true }, { mode: "merge", safetySnapshot: false }]) {
          const req = { method: "POST", path: "/restore", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ snapshot, ...extra }) };
          const r = await send(w.app, req);
          judge(req, r);
          expect(r.status, `${JSON.stringify(snapshot)}: ${r.text}`).toBe(400);
          expect(r.body.error.message).toMatch(/body\.snapshot: a snapshot id looks like/);
          answers++;
        }
      }
      expect(await bothStates(w)).toEqual(before);
      console.info(`[hostile] traversal over HTTP: ${segments.length} path ids x 3 routes + ${snapshotValues.length} snapshot values x 3 bodies = ${answers} requests, all 400/404`);
    } finally {
      await w.cleanup();
    }
  });

  it("every operation of every driver refuses unsafe keys before touching anything; fs never reaches outside its root", async () => {
    const parent = await mkdtemp(join(tmpdir(), "hostile-keys-"));
    try {
      const root = join(parent, "store");
      await mkdir(root);
      await writeFile(join(parent, "sentinel.txt"), "sentinel");
      await mkdir(join(parent, "snapshots"));
      await writeFile(join(parent, "snapshots", `${UNKNOWN_ID}.json`), "decoy");
      const sentinelStat = await stat(join(parent, "sentinel.txt"));
      const before = await diskState(parent);

      const network: string[] = [];
      const s3 = s3Storage({
        endpoint: "http://127.0.0.1:9",
        bucket: "b",
        accessKeyId: "k",
        secretAccessKey: "s",
        fetch: async (r) => {
          network.push(String(r instanceof Request ? r.url : r));
          throw new Error("the s3 driver sent a request");
        },
      });
      const r2Calls: string[] = [];
      const bucket = new Proxy({} as R2BucketLike, {
        get: (_target, prop) => () => {
          r2Calls.push(String(prop));
          throw new Error("the r2 driver called its bucket");
        },
      });
      const drivers: [string, Storage][] = [
        ["fs", fsStorage(root)],
        ["fs+prefix", withPrefix(fsStorage(root), "chromadb/")],
        ["memory", memoryStorage()],
        ["memory+prefix", withPrefix(memoryStorage(), "chromadb/")],
        ["s3", s3],
        ["r2", r2Storage(bucket)],
        // Opens its bucket on first use: an unsafe key must fail before that (else: kind "unavailable").
        ["replit", (await import("../../lib/storage/replit.js")).replitStorage({ bucketId: "hostile-test-no-such-bucket" })],
      ];
      let refusals = 0;
      const ops = {
        put: (s: Storage, k: string) => s.put(k, new TextEncoder().encode("pwned")),
        putIfAbsent: (s: Storage, k: string) => s.putIfAbsent(k, new TextEncoder().encode("pwned")),
        get: (s: Storage, k: string) => s.get(k),
        head: (s: Storage, k: string) => s.head(k),
        delete: (s: Storage, k: string) => s.delete(k),
      };
      for (const [name, storage] of drivers) {
        for (const key of BAD_KEYS) {
          // Through a prefix, "" and "trailing/"-style keys become other keys; only check the unsafe ones.
          if (name.endsWith("+prefix") && keyProblem(`chromadb/${key}`) === null) continue;
          for (const [op, run] of Object.entries(ops)) {
            const err = await run(storage, key).then(
              () => null,
              (e: unknown) => e,
            );
            expect(err, `${name} ${op} ${JSON.stringify(key)}`).toBeInstanceOf(StorageError);
            expect((err as StorageError).kind, `${name} ${op} ${JSON.stringify(key)}`).toBe("invalid_key");
            expect((err as StorageError).message).toMatch(/invalid key/);
            refusals++;
          }
        }
        for (const prefix of ["../", "../../", "/", "/etc/", "a/../../", "..\\", "\u0000/", "a//"]) {
          const err = await (async () => {
            for await (const _ of storage.list(prefix)) void _;
          })().then(
            () => null,
            (e: unknown) => e,
          );
          expect(err, `${name} list ${JSON.stringify(prefix)}`).toBeInstanceOf(StorageError);
          expect((err as StorageError).kind).toBe("invalid_key");
          refusals++;
        }
      }
      // fs: its reserved folder for writes in progress is not a key either.
      for (const run of Object.values(ops)) await expect(run(fsStorage(root), ".partial/x")).rejects.toMatchObject({ kind: "invalid_key" });
      expect(network).toEqual([]);
      expect(r2Calls).toEqual([]);
      expect(await diskState(parent)).toEqual(before);
      expect((await stat(join(parent, "sentinel.txt"))).mtimeMs).toBe(sentinelStat.mtimeMs);

      // Keys that only look like traversal are names, never decoded: they stay inside the root.
      const fs = fsStorage(root);
      for (const key of ["%2e%2e/sentinel.txt", "%2e%2e%2fsentinel.txt", "..%2F..%2Fsentinel.txt", "...", "....//".replace("//", "/x"), "a..b/c", "~/.ssh", "日本語/ünï"]) {
        expect(keyProblem(key), key).toBeNull();
        await fs.put(key, new TextEncoder().encode(key));
        expect(new TextDecoder().decode(await readAll(await fs.get(key)))).toBe(key);
        await fs.delete(key);
      }
      const after = await diskState(parent);
      expect(Object.keys(after).filter((p) => !p.startsWith(`store${sep}`))).toEqual(Object.keys(before).filter((p) => !p.startsWith(`store${sep}`)));
      console.info(`[hostile] storage keys: ${refusals} unsafe key/prefix operations refused over ${drivers.length} drivers, 0 network calls, sentinel unchanged`);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it("fs, fuzzed keys: either refused as invalid_key, or the file lands inside the root; nothing outside ever changes", async () => {
    const parent = await mkdtemp(join(tmpdir(), "hostile-fuzzkeys-"));
    try {
      const root = join(parent, "store");
      await mkdir(root);
      await writeFile(join(parent, "sentinel.txt"), "sentinel");
      const outside = async () => Object.entries(await diskState(parent)).filter(([p]) => !p.startsWith(`store${sep}`));
      const before = await outside();
      const fs = fsStorage(root);
      const part = fc.constantFrom("a", "b", ".", "..", "...", "/", "//", "\\", "\u0000", "%2e", "%2f", "sentinel.txt", " ", "~", "é");
      let accepted = 0;
      let refused = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(part, { minLength: 1, maxLength: 8 }).map((p) => p.join("")), async (key) => {
          const problem = keyProblem(key);
          const result = await fs.put(key, new TextEncoder().encode("fuzz")).then(
            () => null,
            (e: unknown) => e,
          );
          if (problem !== null || key === ".partial" || key.startsWith(".partial/")) {
            expect(result, JSON.stringify(key)).toBeInstanceOf(StorageError);
            expect((result as StorageError).kind).toBe("invalid_key");
            refused++;
          } else if (result === null) {
            const path = resolve(root, ...key.split("/"));
            expect(path.startsWith(root + sep), `${JSON.stringify(key)} -> ${path}`).toBe(true);
            expect(await readFile(path, "utf8")).toBe("fuzz");
            await fs.delete(key);
            accepted++;
          } else {
            // A key whose folder is a file (a, then a/b): a filesystem refusal, still inside the root.
            expect(result, JSON.stringify(key)).toBeInstanceOf(StorageError);
          }
          expect(await outside()).toEqual(before);
        }),
        { numRuns: 300, endOnFailure: true },
      );
      expect(refused).toBeGreaterThan(50);
      expect(accepted).toBeGreaterThan(20);
      console.info(`[hostile] fs fuzzed keys: ${refused} refused, ${accepted} written inside the root and removed`);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it("STORAGE_PREFIX: a prefix that would escape or that no driver accepts is refused at configuration time", async () => {
    const bad = ["/abs/", "/", "../", "../x/", "a/../../b/", "..", "x/..", "a\\b/", "..\\x/", "nul\u0000/", "a//b/", "//", "./x/", "x/./y/", ".", "\u0001/", "x".repeat(1100) + "/"];
    for (const prefix of bad) {
      const err = (() => {
        try {
          loadConfig({ STORAGE_PREFIX: prefix, STORAGE: "memory" });
          return null;
        } catch (e) {
          return e;
        }
      })();
      expect(err, JSON.stringify(prefix)).toBeInstanceOf(InvalidRequestError);
      expect((err as Error).message).toMatch(/STORAGE_PREFIX/);
    }
    const good = ["", "chromadb/", "chromadb", "team-a/prod/", "%2e%2e/", "日本語/", "a.b/"];
    for (const prefix of good) {
      const config = loadConfig({ STORAGE_PREFIX: prefix, STORAGE: "memory" });
      expect(config.storage.prefix).toBe(prefix);
      // Every key the service writes works under it.
      const storage = withPrefix(memoryStorage(), prefix);
      await storage.put(`snapshots/${UNKNOWN_ID}.json`, new Uint8Array([1]));
      await storage.put(chunkKey("ab".repeat(32)), new Uint8Array([1]));
    }
  });
});

// ---------------------------------------------------------------------------------------
// 3. bodies over the limit

/** A body of `total` bytes that counts how much of it was pulled. */
function countingStream(total: number, piece = 64 * 1024): { stream: ReadableStream<Uint8Array>; pulled: () => number } {
  let sent = 0;
  const chunk = new TextEncoder().encode(`{"tag":"${"x".repeat(piece)}`).subarray(0, piece);
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(piece, total - sent);
      controller.enqueue(chunk.subarray(0, n));
      sent += n;
    },
  });
  return { stream, pulled: () => sent };
}

describe("bodies over the limit", () => {
  it("the default 1 MiB limit: 413 payload_too_large in the JSON shape for a 2 MiB body, with and without Content-Length; nothing done", async () => {
    const w = await makeWorld();
    try {
      const auth = { authorization: `Bearer ${w.token}` };
      expect((await send(w.app, { method: "POST", path: "/backups", headers: auth })).status).toBe(201);
      const before = await bothStates(w);
      const snap = (await w.service.list())[0]!.id;
      const big = JSON.stringify({ tag: "x".repeat(2 * MiB) });
      const routes: [string, string][] = [
        ["POST", "/backups"],
        ["POST", "/restore"],
        ["POST", "/prune"],
        ["POST", `/backups/${snap}/verify`],
        ["DELETE", `/backups/${snap}`],
      ];
      for (const [method, path] of routes) {
        const variants: Record<string, string>[] = [{ "content-type": "application/json" }, { "content-type": "application/json", "content-length": String(big.length) }, { "content-type": "text/plain" }];
        for (const headers of variants) {
          const req: HostileRequest = { method, path, headers: { ...auth, ...headers }, body: big };
          const r = await send(w.app, req);
          expect(judge(req, r)).toBe(true);
          expect(r.status, `${method} ${path} ${JSON.stringify(headers)}`).toBe(413);
          expect(r.body.error).toEqual({ code: "payload_too_large", message: "the body is larger than 1048576 bytes" });
        }
        // A chunked body of unknown length (a stream, no Content-Length): read only up to the limit.
        const { stream, pulled } = countingStream(64 * MiB);
        const res = await w.app.request(path, { method, headers: { ...auth, "content-type": "application/json" }, body: stream, duplex: "half" } as RequestInit);
        expect(res.status, `${method} ${path} streamed`).toBe(413);
        expect(await res.json()).toEqual({ error: { code: "payload_too_large", message: "the body is larger than 1048576 bytes" } });
        expect(pulled(), `${method} ${path}: bytes read of a 64 MiB stream`).toBeLessThan(2 * MiB);
      }
      // At the limit is not over it.
      const atLimit = JSON.stringify({ tag: "x" }).padEnd(MiB, " ");
      expect(atLimit.length).toBe(MiB);
      const ok = await send(w.app, { method: "POST", path: "/prune", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ dryRun: true }).padEnd(MiB, " ") });
      expect(ok.status, ok.text).toBe(200);
      const over = await send(w.app, { method: "POST", path: "/prune", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ dryRun: true }).padEnd(MiB + 1, " ") });
      expect(over.status).toBe(413);
      // Without the token, a big body is refused before it is read.
      const anon = countingStream(64 * MiB);
      const unauth = await w.app.request("/backups", { method: "POST", headers: { "content-type": "application/json" }, body: anon.stream, duplex: "half" } as RequestInit);
      expect(unauth.status).toBe(401);
      expect(anon.pulled()).toBeLessThan(MiB);
      expect(await bothStates(w)).toEqual(before);
    } finally {
      await w.cleanup();
    }
  });

  it("through a real HTTP server: a chunked 8 MiB upload and a declared 8 MiB one get 413 JSON", async () => {
    const w = await makeWorld();
    let server: ServerType | undefined;
    try {
      server = await new Promise<ServerType>((ready) => {
        const s = serve({ fetch: w.app.fetch, port: 0, hostname: "127.0.0.1" }, () => ready(s));
      });
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      const before = await bothStates(w);
      const post = (chunked: boolean) =>
        new Promise<{ status: number; body: string; sent: number }>((done, fail) => {
          const total = 8 * MiB;
          const headers: Record<string, string> = { authorization: `Bearer ${w.token}`, "content-type": "application/json" };
          if (!chunked) headers["content-length"] = String(total);
          const req = httpRequest({ host: "127.0.0.1", port, method: "POST", path: "/backups", headers }, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (d: string) => (body += d));
            res.on("end", () => done({ status: res.statusCode ?? 0, body, sent }));
          });
          let sent = 0;
          // The server may answer and close before the upload ends: that is the point.
          req.on("error", (err: NodeJS.ErrnoException) => (err.code === "ECONNRESET" || err.code === "EPIPE" ? undefined : fail(err)));
          const piece = Buffer.alloc(64 * 1024, 0x20);
          const pump = () => {
            while (sent < total) {
              sent += piece.length;
              if (!req.write(piece)) return void req.once("drain", pump);
            }
            req.end();
          };
          pump();
        });
      for (const chunked of [true, false]) {
        const r = await post(chunked);
        expect(r.status, `chunked=${chunked}: ${r.body}`).toBe(413);
        expect(JSON.parse(r.body)).toEqual({ error: { code: "payload_too_large", message: "the body is larger than 1048576 bytes" } });
      }
      expect(await bothStates(w)).toEqual(before);
    } finally {
      await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
      await w.cleanup();
    }
  });
});

// ---------------------------------------------------------------------------------------
// 4. auth, and the token in logs and answers

const PROTECTED = PROTECTED_ROUTES;

/** Whether the bearer middleware should let this header through. */
const isRightHeader = (header: string, token: string) => {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1] === token;
};

describe("auth", () => {
  it("every route but /health: 401 with WWW-Authenticate for fuzzed Authorization headers derived from the token (prefixes, edits, case, padding)", async () => {
    const w = await makeWorld({ token: randomBytes(24).toString("base64url") });
    try {
      const t = w.token;
      const before = await bothStates(w);
      const derived = fc.oneof(
        fc.nat(t.length - 1).map((n) => t.slice(0, n)), // every prefix, including empty
        fc.nat(t.length - 1).map((n) => t.slice(n + 1)), // suffixes
        fc.tuple(fc.nat(t.length - 1), fc.integer({ min: 0x21, max: 0x7e })).map(([i, c]) => (t[i] === String.fromCharCode(c) ? t + "x" : t.slice(0, i) + String.fromCharCode(c) + t.slice(i + 1))), // one character changed
        fc.constantFrom(t.toUpperCase(), t.toLowerCase(), `${t}x`, `${t}${t}`, ` ${t}`, `${t}\t`, `"${t}"`, `${t},${t}`, encodeURIComponent(t) + "%00"),
        printable,
      );
      const header = fc.tuple(fc.constantFrom("Bearer ", "bearer ", "BEARER  ", "Bearer\t", "Basic ", "Token ", "", "Bearer=", "Bearer:"), derived).map(([scheme, tok]) => scheme + tok);
      let refused = 0;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...PROTECTED), header, async ([method, path], auth) => {
          const r = await send(w.app, { method, path, headers: { authorization: auth, "content-type": "application/json" }, body: method === "GET" ? undefined : '{"dryRun":true}' });
          if (isRightHeader(auth.trim(), t)) return; // the right token with other whitespace
          refused++;
          expect(r.status, `${method} ${path} with ${JSON.stringify(auth)}`).toBe(401);
          expect(r.body.error.code).toBe("unauthorized");
          expect(r.headers.get("www-authenticate")).toMatch(/^Bearer\b/);
          // The answer never echoes what was presented.
          const presented = auth.slice(auth.search(/[\s=:]/) + 1).trim();
          if (presented.length >= 6) expect(r.text).not.toContain(presented);
        }),
        { numRuns: 300 },
      );
      expect(refused).toBeGreaterThan(250);
      expect(await bothStates(w)).toEqual(before);
      // /health needs none, and a bad one does not hurt it.
      for (const authorization of ["", "Bearer nope", `Bearer ${t.slice(0, -1)}`]) {
        expect((await send(w.app, { method: "GET", path: "/health", headers: authorization ? { authorization } : {} })).status).toBe(200);
      }
    } finally {
      await w.cleanup();
    }
  });

  it("the token appears in no log line and no answer, through 401, 400, 404, 409, 413, 422, 503, 500 and NDJSON errors", async () => {
    const token = randomBytes(24).toString("base64url");
    // A store that can be switched to fail: as a down backend (503) or with a plain Error (500).
    const mode: { fail: "none" | "unavailable" | "crash" } = { fail: "none" };
    const failing = (s: Storage): Storage => {
      const gate = async <T>(op: "put" | "putIfAbsent" | "get" | "head" | "delete", run: () => Promise<T>): Promise<T> => {
        if (mode.fail === "unavailable") throw new StorageError("fs: connection refused", { driver: "fs", operation: op, kind: "unavailable", retryable: true });
        if (mode.fail === "crash") throw new Error("disk controller on fire");
        return run();
      };
      return {
        driver: s.driver,
        capabilities: s.capabilities,
        put: (k, b) => gate("put", () => s.put(k, b)),
        putIfAbsent: (k, b) => gate("putIfAbsent", () => s.putIfAbsent(k, b)),
        get: (k) => gate("get", () => s.get(k)),
        head: (k) => gate("head", () => s.head(k)),
        list: (p) => s.list(p),
        delete: (k) => gate("delete", () => s.delete(k)),
      };
    };
    const w = await makeWorld({ token, wrap: failing, maxBodyBytes: 64 * 1024 });
    try {
      const answers: string[] = [];
      const statuses = new Set<number>();
      /** Requests whose answer (and log line) may repeat what the client sent, to name it: see below. */
      const echoing = new Set<string>();
      const call = async (method: string, path: string, headers: Record<string, string> = {}, body?: string, echoes = false) => {
        const res = await w.app.request(path, { method, headers: { "content-type": "application/json", ...headers }, body });
        const text = await res.text();
        statuses.add(res.status);
        if (echoes) echoing.add(res.headers.get("x-request-id")!);
        else answers.push(`${res.status} ${JSON.stringify([...res.headers])} ${text}`);
        return { status: res.status, text };
      };
      const auth = { authorization: `Bearer ${token}` };
      const ndjson = { ...auth, accept: "application/x-ndjson" };

      // 401: missing, wrong, prefix, suffix, the token and more, the token in another scheme.
      for (const authorization of [undefined, "Bearer wrong", `Bearer ${token.slice(0, -1)}`, `Bearer ${token.slice(0, 8)}`, `Bearer ${token}x`, `Bearer ${token.toUpperCase()}`, `Basic ${token}`, token]) {
        for (const [method, path] of PROTECTED) await call(method, path, authorization ? { authorization } : {}, method === "GET" ? undefined : "{}");
      }
      // 201, then 400s, 404, 413; some from a client that pasted the token where it does not
      // belong: as a value (never repeated: messages name the field, not its value), or as
      // a malformed body (V8 quotes a piece of the text it cannot parse; the service drops it).
      expect((await call("POST", "/backups", auth)).status).toBe(201);
      await call("POST", "/backups", auth, JSON.stringify({ tag: `${token}!` }));
      await call("POST", "/backups", auth, `{"tag": "${token}"`);
      await call("POST", "/backups", auth, `${token}`);
      await call("POST", "/backups", auth, `{${token}}`);
      await call("POST", "/backups", auth, `[${"1,".repeat(40)}${token}]`);
      await call("POST", "/restore", auth, `{"snapshot":"${token}"}`);
      await call("POST", "/prune", auth, `{"keepTags":["${token}!"]}`);
      await call("GET", `/backups?tag=${token}!`, auth);
      await call("GET", `/backups/${token}`, auth);
      await call("POST", `/backups/${token}/verify`, auth);
      await call("POST", "/backups", auth, JSON.stringify({ tag: token.repeat(4000) }));
      await call("GET", `/backups/${UNKNOWN_ID}`, auth);
      // What is repeated on purpose, to the same client, to name what is wrong: an unknown
      // field or query name, the Content-Type, an unknown route's path, and a tag it stored.
      // Checked below to stay within that request's own answer and log line.
      await call("POST", "/prune", auth, `{"${token}":1}`, true);
      await call("GET", `/backups?${token}=1`, auth, undefined, true);
      await call("POST", "/backups", { ...auth, "content-type": `application/${token}` }, "{}", true);
      await call("GET", `/no-route/${token}`, auth, undefined, true);
      expect((await call("POST", "/backups", auth, JSON.stringify({ tag: token }), true)).status).toBe(201);
      // 409: someone else holds the lock.
      const lease = await new StoreLock(w.storage, "maintenance").acquire("backup", "other-instance");
      await call("POST", "/backups", auth);
      await call("POST", "/backups", ndjson, "{}");
      await lease.release();
      // 422: a damaged chunk, in JSON and NDJSON.
      const snap = (await w.service.list())[0]!.id;
      const victim = (await readManifest(w.storage, snap)).collections[0]!.chunks[0]!;
      const good = await readAll(await w.storage.get(chunkKey(victim.hash)));
      const bad = good.slice();
      bad[bad.length >> 1]! ^= 0x10;
      await w.storage.put(chunkKey(victim.hash), bad);
      await call("POST", `/backups/${snap}/verify`, auth);
      await call("POST", "/restore", auth, JSON.stringify({ snapshot: snap, safetySnapshot: false, mode: "merge" }));
      await call("POST", "/restore", ndjson, JSON.stringify({ snapshot: snap, safetySnapshot: false, mode: "merge" }));
      await w.storage.put(chunkKey(victim.hash), good);
      // 503 and 500 from the store, in JSON and NDJSON.
      for (const fail of ["unavailable", "crash"] as const) {
        mode.fail = fail;
        await call("POST", "/backups", auth);
        await call("POST", "/backups", ndjson, "{}");
        await call("GET", `/backups/${snap}`, auth);
        await call("POST", `/backups/${snap}/verify`, auth);
        await call("DELETE", `/backups/${snap}`, auth);
        await call("POST", "/restore", ndjson, JSON.stringify({ snapshot: snap, collections: ["alpha"], rename: { alpha: "alpha-leak" } }));
        await call("POST", "/prune", auth, "{}");
        mode.fail = "none";
      }
      await tidyChroma();

      // The run covered what it claims to.
      for (const s of [200, 201, 400, 401, 404, 409, 413, 422, 500, 503]) expect(statuses, `status ${s} seen`).toContain(s);
      expect(answers.some((a) => a.includes('"event":"error"'))).toBe(true);
      expect(w.logs.some((l) => l.includes('"level":"error"'))).toBe(true);
      expect(w.logs.some((l) => l.includes('"level":"warn"'))).toBe(true);

      // No line and no answer holds the token, or any 10 characters of it.
      const windows = Array.from({ length: token.length - 9 }, (_, i) => token.slice(i, i + 10));
      const leaks: string[] = [];
      const ownLines = w.logs.filter((l) => echoing.has((JSON.parse(l) as { requestId?: string }).requestId ?? ""));
      expect(ownLines.length).toBeGreaterThanOrEqual(4);
      for (const text of [...w.logs.filter((l) => !ownLines.includes(l)), ...answers]) {
        const window = windows.find((x) => text.includes(x));
        if (window) leaks.push(`${window} in ${text.slice(0, 300)}`);
      }
      console.info(`[hostile] token leak check: ${w.logs.length} log lines and ${answers.length} answers (statuses ${[...statuses].sort().join(",")}), ${echoing.size} echoing requests set aside; leaks: ${leaks.length}`);
      expect(leaks).toEqual([]);
    } finally {
      await w.cleanup();
    }
  });
});
