/**
 * Requirement: reading a 256 MiB object back through `get` (a stream) on the `fs`, `replit`
 * and `s3` drivers raises peak RSS by less than 64 MiB. (`put` takes bytes: the caller
 * holds the object, so only the read is measured.)
 *
 *   npx tsx bench/storage-rss.ts [fs] [replit] [s3] [--size-mib N]
 *
 * Each driver is measured in its own fresh child process (node --expose-gc --import tsx),
 * so one driver's heap never weighs on the next; the storage servers it talks to (the GCS
 * test server for `replit`, s3rver for `s3`) run in yet another child process
 * (bench/storage-servers.ts), so their memory is not counted either.
 *
 * In the measuring process: a warm-up put/get of a small object; a pseudo-random object
 * goes up through `put` and is let go; a GC, then the baseline RSS. The object is read back
 * with `get`, hashed as it streams and checked against the sha256 of what was sent. RSS is
 * sampled every 20 ms and at every piece; the figure is peak RSS minus the baseline.
 *
 * Prints a table, then one JSON line with the figures. Exits non-zero if any figure
 * reaches 64 MiB, or a driver fails.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Storage } from "../lib/storage/types.js";

const MiB = 1024 * 1024;
const LIMIT_MIB = 64;
const DRIVERS = ["fs", "replit", "s3"] as const;
type Driver = (typeof DRIVERS)[number];
const RESULT_PREFIX = "RESULT ";

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = dirname(dirname(SCRIPT));

interface MemoryAtPeak {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

interface ChildResult {
  driver: Driver;
  bytes: number;
  baselineMiB: number;
  getPeakDeltaMiB: number;
  getStartDeltaMiB: number;
  getSeconds: number;
  samples: number;
  getAtPeak: MemoryAtPeak;
  gc: boolean;
}

const toMiB = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;

/* ---------------------------------------------------------------------------------------- */
/* The measuring child                                                                       */
/* ---------------------------------------------------------------------------------------- */

/** Peak RSS since `reset()`, from a 20 ms timer plus explicit samples (one per piece). */
class RssSampler {
  peak = 0;
  count = 0;
  atPeak: MemoryAtPeak = { rss: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
  private timer: NodeJS.Timeout | undefined;

  start(): void {
    this.timer = setInterval(() => this.sample(), 20);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  reset(): void {
    this.peak = 0;
    this.sample();
  }

  sample(): void {
    this.count++;
    const rss = process.memoryUsage.rss();
    if (rss > this.peak) {
      this.peak = rss;
      // Only on a new peak: the breakdown says where the memory went.
      const { heapUsed, external, arrayBuffers } = process.memoryUsage();
      this.atPeak = { rss, heapUsed, external, arrayBuffers };
    }
  }
}

async function drain(stream: ReadableStream<Uint8Array>, onPiece: (piece: Uint8Array) => void): Promise<void> {
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      onPiece(value);
    }
  } finally {
    reader.releaseLock();
  }
}

const gcFn = (globalThis as { gc?: () => void }).gc;
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gcFn?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function openStorage(driver: Driver): Promise<{ storage: Storage; cleanup: () => Promise<void> }> {
  if (driver === "fs") {
    const { fsStorage } = await import("../lib/storage/fs.js");
    const root = await mkdtemp(join(tmpdir(), "bench-fs-"));
    return { storage: fsStorage(root), cleanup: () => rm(root, { recursive: true, force: true }) };
  }
  const url = process.env.BENCH_SERVER_URL;
  if (!url) throw new Error(`${driver}: BENCH_SERVER_URL is not set`);
  if (driver === "replit") {
    // The client reads it when it is first used.
    process.env.STORAGE_EMULATOR_HOST = url;
    const { replitStorage } = await import("../lib/storage/replit.js");
    return { storage: replitStorage({ bucketId: "bench" }), cleanup: async () => {} };
  }
  const { s3Storage } = await import("../lib/storage/s3.js");
  const bucket = process.env.BENCH_S3_BUCKET ?? "bench";
  return {
    storage: s3Storage({ endpoint: url, bucket, accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }),
    cleanup: async () => {},
  };
}

async function child(driver: Driver, totalBytes: number): Promise<void> {
  const log = (message: string) => process.stderr.write(`  [${driver}] ${message}\n`);
  const { storage, cleanup } = await openStorage(driver);
  try {
    // Warm-up: load every module and open connections.
    const small = new Uint8Array(64 * 1024).fill(7);
    await storage.put("warmup/bytes", small);
    await drain(await storage.get("warmup/bytes"), () => {});

    // put: the object as bytes, let go before the baseline.
    const sentBytes = totalBytes;
    const sent = await (async () => {
      const bytes = randomFillSync(new Uint8Array(totalBytes));
      const putStart = performance.now();
      await storage.put("bench/object", bytes);
      log(`put ${toMiB(totalBytes)} MiB in ${((performance.now() - putStart) / 1000).toFixed(1)} s (bytes; not measured)`);
      return createHash("sha256").update(bytes).digest("hex");
    })();
    await settle();

    const sampler = new RssSampler();
    sampler.start();
    sampler.reset();
    const baseline = process.memoryUsage.rss();
    log(`baseline RSS ${toMiB(baseline)} MiB${gcFn ? "" : " (no --expose-gc: baseline taken without a forced GC)"}`);

    // get
    const getStart = process.memoryUsage.rss();
    const receivedHash = createHash("sha256");
    let receivedBytes = 0;
    sampler.reset();
    const getT0 = performance.now();
    await drain(await storage.get("bench/object"), (piece) => {
      receivedHash.update(piece);
      receivedBytes += piece.byteLength;
      sampler.sample();
    });
    sampler.sample();
    const getSeconds = (performance.now() - getT0) / 1000;
    const getPeak = sampler.peak;
    const getAtPeak = sampler.atPeak;
    sampler.stop();
    const received = receivedHash.digest("hex");
    log(`get ${toMiB(receivedBytes)} MiB in ${getSeconds.toFixed(1)} s, peak RSS ${toMiB(getPeak)} MiB (+${toMiB(getPeak - baseline)})`);

    if (receivedBytes !== sentBytes || received !== sent) {
      throw new Error(`get returned ${receivedBytes} bytes with sha256 ${received}; put sent ${sentBytes} bytes with sha256 ${sent}`);
    }
    log(`sha256 ${sent} verified`);
    await storage.delete("bench/object").catch(() => {});

    const result: ChildResult = {
      driver,
      bytes: totalBytes,
      baselineMiB: toMiB(baseline),
      getPeakDeltaMiB: toMiB(getPeak - baseline),
      getStartDeltaMiB: toMiB(getStart - baseline),
      getSeconds: Math.round(getSeconds * 10) / 10,
      samples: sampler.count,
      getAtPeak,
      gc: gcFn !== undefined,
    };
    process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(result)}\n`);
  } finally {
    await cleanup();
  }
}

/* ---------------------------------------------------------------------------------------- */
/* The parent: servers and children                                                           */
/* ---------------------------------------------------------------------------------------- */

/** Node with tsx's loader, run from the repository root. */
function spawnTs(args: string[], env: NodeJS.ProcessEnv, nodeFlags: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeFlags, "--import", "tsx", ...args], {
    cwd: ROOT,
    env,
    stdio: ["pipe", "pipe", "inherit"],
  });
}

interface RunningServer {
  url: string;
  bucket?: string;
  stop(): Promise<void>;
}

async function startServer(kind: "gcs" | "s3"): Promise<RunningServer> {
  const proc = spawnTs([join(ROOT, "bench", "storage-servers.ts"), kind], process.env);
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const lines = createInterface({ input: proc.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once("line", resolve);
    proc.once("exit", (code) => reject(new Error(`the ${kind} server exited (code ${code}) before printing its URL`)));
  });
  const { url, bucket } = JSON.parse(first) as { url: string; bucket?: string };
  return {
    url,
    bucket,
    async stop() {
      proc.stdin!.end(); // the launcher shuts down when its stdin closes
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
      lines.close();
    },
  };
}

async function measure(driver: Driver, sizeMiB: number): Promise<ChildResult> {
  const server = driver === "fs" ? undefined : await startServer(driver === "replit" ? "gcs" : "s3");
  try {
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (server) env.BENCH_SERVER_URL = server.url;
    if (server?.bucket) env.BENCH_S3_BUCKET = server.bucket;
    const proc = spawnTs([SCRIPT, "--child", driver, "--size-mib", String(sizeMiB)], env, ["--expose-gc"]);
    proc.stdin!.end();
    let result: ChildResult | undefined;
    const lines = createInterface({ input: proc.stdout! });
    lines.on("line", (line) => {
      if (line.startsWith(RESULT_PREFIX)) result = JSON.parse(line.slice(RESULT_PREFIX.length)) as ChildResult;
      else process.stderr.write(`  [${driver}] ${line}\n`);
    });
    const code = await new Promise<number | null>((resolve) => proc.once("exit", (c) => resolve(c)));
    if (code !== 0 || !result) throw new Error(`the ${driver} measurement exited with code ${code}${result ? "" : " and no result"}`);
    return result;
  } finally {
    await server?.stop();
  }
}

function parseArgs(argv: string[]): { child?: Driver; drivers: Driver[]; sizeMiB: number } {
  let child: Driver | undefined;
  let sizeMiB = 256;
  const drivers: Driver[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--child") child = argv[++i] as Driver;
    else if (arg === "--size-mib") sizeMiB = Number(argv[++i]);
    else if ((DRIVERS as readonly string[]).includes(arg)) drivers.push(arg as Driver);
    else throw new Error(`unknown argument ${JSON.stringify(arg)}; usage: storage-rss.ts [fs] [replit] [s3] [--size-mib N]`);
  }
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new Error("--size-mib must be a positive integer");
  if (child !== undefined && !DRIVERS.includes(child)) throw new Error(`unknown driver ${JSON.stringify(child)}`);
  return { child, drivers: drivers.length ? drivers : [...DRIVERS], sizeMiB };
}

async function parent(drivers: Driver[], sizeMiB: number): Promise<void> {
  console.log(`Reading a ${sizeMiB} MiB object back through get (a stream); limit: peak RSS + ${LIMIT_MIB} MiB.`);
  const results = new Map<Driver, ChildResult | Error>();
  for (const driver of drivers) {
    process.stderr.write(`${driver}:\n`);
    try {
      results.set(driver, await measure(driver, sizeMiB));
    } catch (err) {
      results.set(driver, err as Error);
      process.stderr.write(`  [${driver}] FAILED: ${(err as Error).message}\n`);
    }
  }

  const verdict = (mib: number) => (mib < LIMIT_MIB ? "PASS" : "FAIL");
  const rows = [["driver", "baseline MiB", "get peak Δ MiB", "get s", "result"]];
  let ok = true;
  const figures: Record<string, { getPeakDeltaMiB: number | null; error?: string }> = {};
  for (const driver of drivers) {
    const r = results.get(driver)!;
    if (r instanceof Error) {
      ok = false;
      rows.push([driver, "-", "-", "-", "ERROR"]);
      figures[driver] = { getPeakDeltaMiB: null, error: r.message };
      continue;
    }
    const pass = r.getPeakDeltaMiB < LIMIT_MIB;
    ok &&= pass;
    rows.push([
      driver,
      r.baselineMiB.toFixed(1),
      `${r.getPeakDeltaMiB.toFixed(1)} ${verdict(r.getPeakDeltaMiB)}`,
      r.getSeconds.toFixed(1),
      pass ? "PASS" : "FAIL",
    ]);
    figures[driver] = { getPeakDeltaMiB: r.getPeakDeltaMiB };
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
  for (const driver of drivers) {
    const r = results.get(driver)!;
    if (r instanceof Error) continue;
    const at = (m: MemoryAtPeak) => `heap ${toMiB(m.heapUsed)}, external ${toMiB(m.external)}, arrayBuffers ${toMiB(m.arrayBuffers)} MiB`;
    console.log(`${driver}: at get peak ${at(r.getAtPeak)}; RSS at get start +${r.getStartDeltaMiB} MiB; ${r.samples} samples`);
  }
  console.log(ok ? `PASS: every driver stayed under +${LIMIT_MIB} MiB` : `FAIL: a driver reached +${LIMIT_MIB} MiB or failed`);
  console.log(JSON.stringify(figures));
  process.exitCode = ok ? 0 : 1;
}

const args = parseArgs(process.argv.slice(2));
if (args.child) {
  child(args.child, args.sizeMiB * MiB).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
} else {
  await parent(args.drivers, args.sizeMiB);
}
