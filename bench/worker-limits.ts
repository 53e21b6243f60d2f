/**
 * `npm run bench:worker -- [--records 20000,50000] [--dim 384]`: what a Cloudflare Worker
 * can back up and restore within its limits, measured under workerd (`wrangler dev
 * --local`, an emulated R2 bucket) against a real Chroma on this machine.
 *
 * Cloudflare bills and limits CPU time, not wall time (waiting on Chroma or R2 is free):
 * 30 s per request by default on the paid plan, up to 5 min with `limits.cpu_ms`; memory is
 * 128 MB per isolate. workerd enforces neither locally, so this reads them off the workerd
 * process: the CPU it used during each request (/proc/PID/stat utime+stime, which also
 * holds the runtime's own I/O work, so it overstates the Worker's share) and its peak RSS
 * above its idle RSS (VmHWM after clear_refs; this also holds the runtime's buffers, so
 * it overstates the isolate's heap). Prints one line per figure and a JSON line, and
 * every 10 s of a request workerd's CPU and RSS so far (stderr). `--log-level info`
 * shows wrangler's request log.
 */
import { spawn } from "node:child_process";
import { request } from "node:http";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startEmbeddedChroma } from "../lib/chroma/embedded.js";
import { findProcesses } from "../lib/chroma/processes.js";
import { generateCollections, loadCorpus, seedCollection, type CollectionSpec } from "./dataset.js";

const TICKS_PER_SECOND = 100;

function arg(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] ? process.argv[at + 1]! : fallback;
}

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

async function statusKb(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
}

interface Measured {
  status: number;
  wallSeconds: number;
  cpuSeconds: number;
  peakRssMb: number;
  answer: Record<string, unknown>;
}

/**
 * A POST through node:http, which waits as long as the Worker takes: fetch (undici) gives
 * up after 300 s without response headers, which once read as a Worker that never answers.
 */
function post(url: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (part: string) => (text += part));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/** One request to the Worker, with the workerd process's CPU and peak RSS over it. */
async function measure(workerd: number, url: string, token: string, path: string, body: unknown): Promise<Measured> {
  const idleKb = await statusKb(workerd, "VmRSS");
  await writeFile(`/proc/${workerd}/clear_refs`, "5");
  const cpuBefore = await cpuSeconds(workerd);
  const started = performance.now();
  const sampler = setInterval(() => {
    void Promise.all([cpuSeconds(workerd), statusKb(workerd, "VmRSS")]).then(
      ([cpu, rss]) => console.error(`  ${path} +${((performance.now() - started) / 1000).toFixed(0)} s: workerd CPU ${(cpu - cpuBefore).toFixed(1)} s, RSS ${(rss / 1024).toFixed(0)} MB`),
      () => undefined,
    );
  }, 10_000);
  const res = await post(`${url}${path}`, token, body);
  const answer = JSON.parse(res.text) as Record<string, unknown>;
  clearInterval(sampler);
  const wallSeconds = (performance.now() - started) / 1000;
  const cpu = (await cpuSeconds(workerd)) - cpuBefore;
  const peakKb = await statusKb(workerd, "VmHWM");
  return { status: res.status, wallSeconds, cpuSeconds: cpu, peakRssMb: Math.max(0, peakKb - idleKb) / 1024, answer };
}

async function startWorker(chromaUrl: string, token: string, persistTo: string): Promise<{ url: string; workerd: number; stop: () => void }> {
  const port = await freePort();
  const child = spawn(
    "npx",
    ["wrangler", "dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", persistTo, "--var", `CHROMA_URL:${chromaUrl}`, "--var", `BACKUP_API_TOKEN:${token}`, "--var", "STORAGE_PREFIX:bench/", "--log-level", arg("log-level", "warn")],
    { stdio: ["ignore", "inherit", "inherit"], detached: true, env: { ...process.env, WRANGLER_SEND_METRICS: "false" } },
  );
  const stop = () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // already gone
    }
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (Date.now() > deadline) {
      stop();
      throw new Error("wrangler dev did not answer /health within 120 s");
    }
    const up = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (up) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  // Other workerds may run on the machine: ours descends from the wrangler we started,
  // which runs two: a proxy in front, and the runtime of the Worker (with an inspector).
  const all = await findProcesses(() => true);
  const parentOf = new Map(all.map((p) => [p.pid, p.ppid]));
  const descends = (pid: number): boolean => {
    for (let at: number | null | undefined = pid; at; at = parentOf.get(at)) if (at === child.pid) return true;
    return false;
  };
  const workerds = all.filter((p) => p.argv?.some((a) => a.endsWith("/workerd")) && p.argv.includes("serve") && p.argv.some((a) => a.startsWith("--inspector-addr")) && descends(p.pid));
  if (workerds.length !== 1) {
    stop();
    throw new Error(`expected one workerd process, found ${workerds.length}: ${JSON.stringify(workerds)}`);
  }
  return { url, workerd: workerds[0]!.pid, stop };
}

async function main(): Promise<void> {
  const sizes = arg("records", "20000,50000").split(",").map(Number);
  const dim = Number(arg("dim", "384"));
  const dir = await mkdtemp(join(tmpdir(), "bench-worker-limits-"));
  const chroma = await startEmbeddedChroma({ dataDir: join(dir, "chroma") });
  const token = "bench-worker-limits-token";
  const worker = await startWorker(chroma.url, token, join(dir, "wrangler"));
  const results: Record<string, unknown>[] = [];
  try {
    const corpus = loadCorpus(Math.max(...sizes));
    for (const records of sizes) {
      const spec: CollectionSpec = { name: `limits-${records}`, space: "cosine", share: 1, configurationJson: '{"hnsw":{"space":"cosine"}}', metadataJson: '{"bench":"worker-limits"}' };
      const [generated] = generateCollections({ specs: [spec], counts: [records], dim, seed: records, corpus });
      await seedCollection(chroma.url, generated!);
      const backup = await measure(worker.workerd, worker.url, token, "/backups", { collections: [spec.name] });
      if (backup.status !== 201) throw new Error(`backup of ${records} records: ${backup.status} ${JSON.stringify(backup.answer)}`);
      const restore = await measure(worker.workerd, worker.url, token, "/restore", { snapshot: backup.answer.id, collections: [spec.name], rename: { [spec.name]: `${spec.name}-copy` } });
      if (restore.status !== 200) throw new Error(`restore of ${records} records: ${restore.status} ${JSON.stringify(restore.answer)}`);
      const row = {
        records,
        dim,
        snapshotMb: Number(backup.answer.bytes) / 1e6,
        backup: { wallSeconds: backup.wallSeconds, cpuSeconds: backup.cpuSeconds, peakRssMb: backup.peakRssMb },
        restore: { wallSeconds: restore.wallSeconds, cpuSeconds: restore.cpuSeconds, peakRssMb: restore.peakRssMb },
      };
      results.push(row);
      for (const [op, m] of [["backup", backup], ["restore", restore]] as const) {
        console.log(
          `${records} records x ${dim} dims, ${op}: ${m.wallSeconds.toFixed(1)} s wall, workerd CPU ${m.cpuSeconds.toFixed(2)} s ` +
            `(${Math.round(records / Math.max(m.cpuSeconds, 0.01))} records per CPU second), peak RSS +${m.peakRssMb.toFixed(1)} MB over idle`,
        );
      }
      await fetch(`${chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections/${spec.name}-copy`, { method: "DELETE" });
      await fetch(`${chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections/${spec.name}`, { method: "DELETE" });
    }
  } finally {
    worker.stop();
    await chroma.stop();
    await rm(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ workerLimits: results }));
}

await main();
