/**
 * The real service process killed with SIGKILL at random points (issue "Reliability and
 * security", crashes).
 *
 * The service runs from its sources (node --import tsx runtime/node.ts; `npm start` runs
 * the same code bundled, dist/server.mjs) against a test Chroma, with the fs store and a
 * short lease (LOCK_TTL). Each trial kills one process in the middle of a request, checks
 * the store with the engine itself, then starts the next process, which first proves
 * recovery and then becomes the next victim:
 *
 * - backup (20 kills): every committed snapshot verifies, no partial snapshot is listed,
 *   no object is torn, the lease left by the dead process expires within LOCK_TTL, and
 *   the next backup succeeds;
 * - restore (6 kills): the collection is its old self or the snapshot's, never half of
 *   either, and a rerun of the restore completes with the snapshot's exact records;
 * - prune with grace 0 (8 kills): every remaining snapshot keeps every chunk (all verify),
 *   and a rerun finishes the sweep.
 *
 * Kill delays are drawn (seeded) from 0 to a bit more than the operation's measured
 * duration, so kills land across the whole operation; each trial reports where it landed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { readCatalog } from "../../lib/snapshot/catalog.js";
import { chunkKey, sha256Hex } from "../../lib/snapshot/chunk.js";
import { isAsideCollection } from "../../lib/snapshot/aside.js";
import { verifySnapshot } from "../../lib/snapshot/verify.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { readAll } from "../../lib/storage/streams.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, deleteRecords, dumpCollection, listCollectionNames, makeRecords, mulberry32 } from "../fixtures/dataset.js";
import { resetChroma, type CollectionSpec } from "../handlers/harness.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TOKEN = "crash-test-token-0123456789";
const LOCK_TTL_MS = 1000;
/** Four collections of 2,000 records (dim 16): a backup of them takes about 0.5-1 s here. */
const COLLECTIONS: CollectionSpec[] = [0, 1, 2, 3].map((k) => ({ name: `col${k}`, count: 2000, dim: 16, seed: 80 + k }));
const BACKUP_KILLS = 20;
const RESTORE_KILLS = 6;
const PRUNE_KILLS = 8;
const ORPHAN_CHUNKS = 1000; // a sweep long enough that kills land in it (with 500, one CI run had 5 of 8 land after the answer)
const rand = mulberry32(Number(process.env.CRASH_SEED ?? 4242)); // CRASH_SEED=n for other kill points

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Proc {
  child: ChildProcess;
  url: string;
  port: number;
  out: () => string;
  exit: Promise<unknown>;
}

const procs = new Set<Proc>();
const tempDirs: string[] = [];
let chroma: TestChroma;
let rest: ChromaRest;
let dataDir: string;
let backupDir: string;
let store: Storage;

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `crash-${name}-`));
  tempDirs.push(dir);
  return dir;
}

/**
 * Starts the service on `dir` and resolves once /ready answers 200 (/health answers
 * earlier, while the service is still starting). A free port can be taken
 * by another test file between the pick and the listen (seen under load): then once more.
 */
async function startService(dir: string): Promise<Proc> {
  try {
    return await startServiceOn(dir, await freePort());
  } catch (err) {
    if (!/EADDRINUSE/.test((err as Error).message)) throw err;
    return startServiceOn(dir, await freePort());
  }
}

async function startServiceOn(dir: string, port: number): Promise<Proc> {
  const child = spawn(process.execPath, ["--import", "tsx", "runtime/node.ts"], {
    cwd: ROOT,
    detached: true, // its own process group, killed as a whole
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...serviceFreeEnv(),
      PORT: String(port),
      HOST: "127.0.0.1",
      CHROMA_URL: chroma.url,
      STORAGE: "fs",
      BACKUP_DIR: dir,
      DATA_DIR: dataDir,
      BACKUP_API_TOKEN: TOKEN,
      RESTORE_ON_START: "never",
      LOCK_TTL: `${LOCK_TTL_MS / 1000}s`,
      RETENTION_KEEP_LAST: "4",
    },
  });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out = (out + b.toString()).slice(-20_000)));
  child.stderr!.on("data", (b: Buffer) => (out = (out + b.toString()).slice(-20_000)));
  let exited = false;
  const exit = new Promise((resolve) => child.once("exit", (code, signal) => ((exited = true), resolve({ code, signal }))));
  const proc: Proc = { child, port, url: `http://127.0.0.1:${port}`, out: () => out, exit };
  procs.add(proc);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`the service exited during startup:\n${out}`);
    try {
      if ((await fetch(`${proc.url}/ready`, { signal: AbortSignal.timeout(1000) })).ok) return proc;
    } catch {
      // not up yet
    }
    await sleep(20);
  }
  throw new Error(`the service was not ready within 30 s:\n${out}`);
}

/**
 * One spare process is always starting (on the store of the current phase), so the next
 * trial's process is up by the time it is needed; the spare is awaited before any
 * request that is to be killed, so no start-up competes with it for the CPU.
 */
let spare: { dir: string; proc: Promise<Proc> } | null = null;

async function takeProcess(dir: string): Promise<Proc> {
  const proc = spare?.dir === dir ? spare.proc : startService(dir);
  if (spare && spare.dir !== dir) await kill(await spare.proc);
  spare = { dir, proc: startService(dir) };
  spare.proc.catch(() => {});
  return proc;
}

async function spareReady(): Promise<void> {
  await spare?.proc;
}

async function kill(proc: Proc): Promise<void> {
  procs.delete(proc);
  try {
    process.kill(-proc.child.pid!, "SIGKILL");
  } catch {
    // already gone
  }
  await Promise.race([proc.exit, sleep(5000)]);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function call(proc: Proc, method: string, path: string, body?: object): Promise<{ status: number; body: any; ms: number }> {
  const started = Date.now();
  const res = await fetch(`${proc.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, ms: Date.now() - started };
}

/**
 * Calls `path` and retries while it answers 409 because the lease of a killed process is
 * still live: waits until the expiry the answer names, which must be within LOCK_TTL of the kill.
 */
async function callAfterLease(proc: Proc, path: string, body: object, killedAt: number): Promise<{ status: number; body: unknown; ms: number; waitedMs: number }> {
  let waitedMs = 0;
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await call(proc, "POST", path, body);
    if (r.status !== 409) return { ...r, waitedMs };
    const expiresAt = Date.parse(r.body.error.details.expiresAt);
    expect(expiresAt - killedAt, "the dead process's lease expires within LOCK_TTL of the kill").toBeLessThanOrEqual(LOCK_TTL_MS + 100);
    const wait = Math.max(0, expiresAt - Date.now()) + 30;
    waitedMs += wait;
    await sleep(wait);
  }
  throw new Error(`${path}: still 409 after waiting for the lease`);
}

/**
 * Sends a POST and SIGKILLs the process `delayMs` after the request was flushed to the
 * socket (0: at once). Resolves with whether an answer had arrived before the kill.
 */
function postThenKill(proc: Proc, path: string, body: object, delayMs: number): Promise<{ answered: number | null; killedAt: number }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve) => {
    let answered: number | null = null;
    const req = httpRequest({
      host: "127.0.0.1",
      port: proc.port,
      path,
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
    });
    req.on("response", (res) => {
      answered = res.statusCode ?? null;
      res.resume();
    });
    req.on("error", () => {}); // the connection dies with the process
    req.end(payload, () => {
      const fire = async () => {
        const killedAt = Date.now();
        await kill(proc);
        resolve({ answered, killedAt });
      };
      if (delayMs <= 0) void fire();
      else setTimeout(() => void fire(), delayMs);
    });
  });
}

/** Kill delays: at once, 5 ms, then uniform over 0 to 1.2 times the operation's measured duration. */
function killDelay(trial: number, durationMs: number): number {
  if (trial === 0) return 0;
  if (trial === 1) return 5;
  return Math.round(rand() * durationMs * 1.2);
}

async function files(dir: string, under: string): Promise<string[]> {
  try {
    const entries = await readdir(join(dir, "chromadb", under), { recursive: true, withFileTypes: true });
    return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(join(dir, "chromadb").length + 1));
  } catch {
    return [];
  }
}

/** Temp files of writes in progress that a killed process left (outside every key; never listed). */
async function partialFiles(dir: string): Promise<number> {
  return (await readdir(join(dir, ".partial")).catch(() => [])).length;
}

/** The lease a dead process left behind, if any. */
async function leaseOf(storage: Storage): Promise<{ expiresAt: string; operation: string } | null> {
  const keys: string[] = [];
  for await (const info of storage.list("locks/maintenance/")) keys.push(info.key);
  const top = keys.sort().at(-1);
  if (!top) return null;
  return JSON.parse(new TextDecoder().decode(await readAll(await storage.get(top)))) as { expiresAt: string; operation: string };
}

/**
 * The store after a kill, checked by the engine: no damaged manifest, every snapshot
 * verifies (every chunk present, sized, hashed and decodable), and (unless `torn` is
 * false: nothing was being written) no chunk object holds anything but the bytes its
 * name hashes. Returns the snapshot ids.
 */
async function expectStoreSound(storage: Storage, what: string, torn = true): Promise<string[]> {
  const catalog = await readCatalog(storage);
  expect(catalog.damaged, `${what}: damaged manifests`).toEqual([]);
  for (const m of catalog.snapshots) {
    const report = await verifySnapshot(storage, m);
    expect(report.errors, `${what}: snapshot ${m.id}`).toEqual([]);
    expect(report.records).toBe(m.records);
  }
  if (torn) {
    for await (const info of storage.list("chunks/")) {
      const hash = info.key.slice(info.key.lastIndexOf("/") + 1);
      expect(await sha256Hex(await readAll(await storage.get(info.key))), `${what}: chunk object ${info.key}`).toBe(hash);
    }
  }
  return catalog.snapshots.map((m) => m.id);
}

async function totalRecords(): Promise<number> {
  let n = 0;
  for (const c of COLLECTIONS) n += await rest.count(await collectionId(chroma.url, c.name));
  return n;
}

const dump = async (name: string) => parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, name)));

function tally(stages: string[]): string {
  const counts = new Map<string, number>();
  for (const s of stages) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].map(([s, n]) => `${s}: ${n}`).join(", ");
}

let current: Proc;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
  dataDir = await tempDir("data");
  backupDir = await tempDir("store");
  store = withPrefix(fsStorage(backupDir), "chromadb/");
  await resetChroma(chroma.url, COLLECTIONS);
  current = await takeProcess(backupDir);
}, 120_000);

afterAll(async () => {
  for (const p of [...procs]) await kill(p);
  await chroma?.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("SIGKILL of the service process", () => {
  it(`during backups (${BACKUP_KILLS} kills): committed snapshots verify, none partial, the lease expires, the next backup succeeds`, async () => {
    /** Changed records in every collection, so a backup writes new chunks throughout. */
    const change = async (trial: number) => {
      for (const [k, c] of COLLECTIONS.entries()) {
        const from = (trial * 97 + k * 31 + 1000) % (c.count - 60);
        await addRecords(chroma.url, await collectionId(chroma.url, c.name), makeRecords(c.count, c.dim, 1000 + trial * 10 + k, c.name).slice(from, from + 60), "upsert");
      }
    };
    // Calibration: how long a backup of that much change takes in a process that is warm
    // (every victim has served one backup before), for the spread of kill delays.
    const first = await call(current, "POST", "/backups", {});
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    await change(-1);
    await spareReady();
    const warm = await call(current, "POST", "/backups", {});
    expect(warm.status, JSON.stringify(warm.body)).toBe(201);
    const duration = warm.ms;
    const trials: { delay: number; stage: string; lockWaitMs: number }[] = [];
    const started = Date.now();

    for (let trial = 0; trial < BACKUP_KILLS; trial++) {
      await change(trial);
      const before = new Set((await readCatalog(store)).snapshots.map((m) => m.id));
      const chunksBefore = new Set(await files(backupDir, "chunks"));
      const expected = await totalRecords();

      const delay = killDelay(trial, duration);
      await spareReady();
      const { answered, killedAt } = await postThenKill(current, "/backups", {}, delay);
      const next = takeProcess(backupDir);

      const ids = await expectStoreSound(store, `backup kill #${trial} at ${delay} ms`);
      const added = ids.filter((id) => !before.has(id));
      expect(added.length, "at most the one snapshot of the killed backup").toBeLessThanOrEqual(1);
      for (const id of added) expect((await readCatalog(store)).snapshots.find((m) => m.id === id)!.records).toBe(expected);
      const lease = await leaseOf(store);
      const leaseLive = lease !== null && Date.parse(lease.expiresAt) > killedAt;
      if (leaseLive) expect(Date.parse(lease.expiresAt) - killedAt).toBeLessThanOrEqual(LOCK_TTL_MS + 100);
      const newChunks = (await files(backupDir, "chunks")).filter((f) => !chunksBefore.has(f)).length;
      const stage =
        answered !== null
          ? "after the answer"
          : added.length > 0
            ? "committed, not answered"
            : leaseLive
              ? newChunks > 0
                ? "chunks written, no manifest"
                : "lock held, nothing written yet"
              : "before the lock was taken";

      current = await next;
      // No partial snapshot listed: the API lists exactly the committed ones.
      const listed = await call(current, "GET", "/backups");
      expect((listed.body.snapshots as { id: string }[]).map((s) => s.id).sort()).toEqual([...ids].sort());
      // The next backup succeeds, once the dead process's lease (if any) has expired.
      const again = await callAfterLease(current, "/backups", { force: true }, killedAt);
      expect(again.status, JSON.stringify(again.body)).toBe(201);
      const summary = again.body as { id: string; records: number };
      expect(summary.records).toBe(expected);
      const manifest = (await readCatalog(store)).snapshots.find((m) => m.id === summary.id)!;
      expect((await verifySnapshot(store, manifest)).ok).toBe(true);
      trials.push({ delay, stage, lockWaitMs: again.waitedMs });
    }

    const waits = trials.map((t) => t.lockWaitMs).filter((w) => w > 0);
    console.log(
      `backup kills: ${trials.length} in ${Math.round((Date.now() - started) / 1000)} s; delays ${trials.map((t) => t.delay).join(", ")} ms ` +
        `(a backup took ~${duration} ms); landed: ${tally(trials.map((t) => t.stage))}; ` +
        `next backup waited for a dead lease in ${waits.length} trials (max ${Math.max(0, ...waits)} ms); ` +
        `temp files the dead processes left in the fs driver's .partial/: ${await partialFiles(backupDir)}`,
    );
    // Kills landed across the backup, not only before or after it.
    expect(trials.filter((t) => t.stage === "chunks written, no manifest" || t.stage === "lock held, nothing written yet").length).toBeGreaterThanOrEqual(4);
  }, 180_000);

  it(`during restores (${RESTORE_KILLS} kills): the collection is its old self or the snapshot's, and a rerun completes the restore`, async () => {
    const snap = await call(current, "POST", "/backups", { force: true });
    expect(snap.status).toBe(201);
    const snapshot = snap.body.id as string;
    const source = await dump("col0");
    const target = { snapshot, collections: ["col0"], safetySnapshot: false };

    /** Changes col0 so the restore has something to undo; returns its content now. */
    const change = async (seed: number) => {
      const id = await collectionId(chroma.url, "col0");
      await deleteRecords(chroma.url, id, Array.from({ length: 40 }, (_, i) => `col0-${(seed * 13 + i * 41) % 2000}`));
      await addRecords(chroma.url, id, makeRecords(2000, 16, seed, "col0").slice(seed % 1900, (seed % 1900) + 50), "upsert");
      return dump("col0");
    };

    await change(500);
    await spareReady();
    const calibration = await call(current, "POST", "/restore", target);
    expect(calibration.status, JSON.stringify(calibration.body)).toBe(200);
    const duration = calibration.ms;
    const stages: string[] = [];
    const delays: number[] = [];

    for (let trial = 0; trial < RESTORE_KILLS; trial++) {
      const before = await change(501 + trial);
      expect(before.size).not.toBe(source.size);
      const delay = killDelay(trial, duration);
      delays.push(delay);
      await spareReady();
      const { answered, killedAt } = await postThenKill(current, "/restore", target, delay);
      const next = takeProcess(backupDir);
      await sleep(1000); // requests the dead process had sent reach Chroma (300 ms once let a late "create the aside" land after the rerun's sweep)

      // Never half restored: the old collection, the snapshot's, or (between the drop and
      // the rename, which Chroma cannot do atomically) gone with the whole new one aside.
      const names = await listCollectionNames(chroma.url);
      const aside = names.filter((n) => isAsideCollection(n) && n.startsWith("col0."));
      let stage: string;
      if (names.includes("col0")) {
        const now = await dump("col0");
        if (now.size === before.size && [...before.keys()].every((k) => now.has(k))) {
          expectSameRecords(before, now, false);
          stage = aside.length > 0 ? "old collection intact, new one left aside" : "old collection intact, nothing aside";
        } else {
          expectSameRecords(source, now, false);
          stage = answered !== null ? "after the answer" : "restored, not answered";
        }
      } else {
        expect(aside).toHaveLength(1);
        expectSameRecords(source, await dump(aside[0]!), false);
        stage = "old collection dropped, new one whole aside";
      }
      stages.push(stage);

      current = await next;
      const rerun = await callAfterLease(current, "/restore", target, killedAt);
      expect(rerun.status, JSON.stringify(rerun.body)).toBe(200);
      expectSameRecords(source, await dump("col0"), false);
      expect((await listCollectionNames(chroma.url)).filter(isAsideCollection), "the rerun swept what the dead restore left aside").toEqual([]);
    }
    console.log(`restore kills: ${RESTORE_KILLS}; delays ${delays.join(", ")} ms (a restore of col0 took ~${duration} ms); landed: ${tally(stages)}`);
    expect(stages.filter((s) => s.startsWith("old collection")).length).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it(`during prune with grace 0 (${PRUNE_KILLS} kills): every remaining snapshot keeps its chunks, and a rerun finishes the sweep`, async () => {
    // The store of the trials above: several snapshots, and chunks only forgotten ones or dead runs used.
    const template = await tempDir("prune-template");
    await cp(backupDir, template, { recursive: true });
    const prunable = withPrefix(fsStorage(template), "chromadb/");
    // Plus what many dead runs would leave: chunks no manifest references (valid ones,
    // content-addressed), so the sweep is long enough for kills to land in it.
    for (let i = 0; i < ORPHAN_CHUNKS; i++) {
      const bytes = new Uint8Array(1024).map(() => Math.floor(rand() * 256));
      await prunable.put(chunkKey(await sha256Hex(bytes)), bytes);
    }
    const templateIds = await expectStoreSound(prunable, "template");
    const templateChunks = (await files(template, "chunks")).length;
    expect(templateIds.length).toBeGreaterThanOrEqual(3);
    const keep = (await readCatalog(prunable)).snapshots[0]!;
    const referenced = new Set(keep.collections.flatMap((c) => c.chunks.map((r) => r.hash)));
    expect(templateChunks).toBeGreaterThanOrEqual(referenced.size + ORPHAN_CHUNKS);

    const trialDir = await tempDir("prune");
    const trialStore = withPrefix(fsStorage(trialDir), "chromadb/");
    const fresh = async () => {
      await rm(trialDir, { recursive: true, force: true });
      await cp(template, trialDir, { recursive: true });
    };
    const body = { keepLast: 1, grace: 0 };
    await fresh();
    await kill(current);
    current = await takeProcess(trialDir);
    expect((await call(current, "POST", "/prune", { ...body, dryRun: true })).status).toBe(200); // warms the process up
    await spareReady();
    const calibration = await call(current, "POST", "/prune", body);
    expect(calibration.status, JSON.stringify(calibration.body)).toBe(200);
    expect(calibration.body.deleted).toHaveLength(templateIds.length - 1);
    const duration = calibration.ms;
    const stages: string[] = [];
    const delays: number[] = [];

    for (let trial = 0; trial < PRUNE_KILLS; trial++) {
      await fresh();
      const delay = killDelay(trial, duration);
      delays.push(delay);
      await spareReady();
      const { answered, killedAt } = await postThenKill(current, "/prune", body, delay);
      const next = takeProcess(trialDir);

      const ids = await expectStoreSound(trialStore, `prune kill #${trial} at ${delay} ms`, false);
      expect(ids, "the snapshot every rule keeps").toContain(keep.id);
      const chunksLeft = (await files(trialDir, "chunks")).length;
      stages.push(
        answered !== null
          ? "after the answer"
          : ids.length === templateIds.length
            ? "nothing deleted yet"
            : ids.length > 1
              ? "deleting manifests"
              : chunksLeft === templateChunks
                ? "manifests deleted, sweep not started"
                : chunksLeft > referenced.size
                  ? "sweeping chunks"
                  : "done, not answered",
      );

      current = await next;
      const rerun = await callAfterLease(current, "/prune", body, killedAt);
      expect(rerun.status, JSON.stringify(rerun.body)).toBe(200);
      expect(await expectStoreSound(trialStore, `after the rerun of prune #${trial}`, false)).toEqual([keep.id]);
      // Nothing but the kept snapshot's chunks and sidecars is left.
      const left = [...(await files(trialDir, "chunks")), ...(await files(trialDir, "digests"))].map((f) => f.slice(f.lastIndexOf("/") + 1));
      expect(new Set(left)).toEqual(referenced);
    }
    console.log(`prune kills: ${PRUNE_KILLS}; delays ${delays.join(", ")} ms (a prune of ${templateIds.length - 1} snapshots and ${templateChunks - referenced.size} chunks took ~${duration} ms); landed: ${tally(stages)}`);
    expect(stages.filter((s) => s === "deleting manifests" || s === "sweeping chunks" || s === "manifests deleted, sweep not started").length, "kills landed mid-prune").toBeGreaterThanOrEqual(2);
  }, 120_000);
});
