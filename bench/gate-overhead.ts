/**
 * What the Chroma gate (lib/chroma/gate.ts) costs next to going direct: `npx tsx bench/gate-overhead.ts`.
 * One embedded Chroma; the same requests straight to its port and through the gate, in
 * alternating rounds: N small gets (one record by id) one after another, and adds of
 * 1,000 records (384 dimensions, ~8 MB of JSON each); heartbeats show the bare per-request cost. The gate runs in this process, as it
 * runs in the service's (the client here shares its CPU: an upper bound).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { freePort, startEmbeddedChroma } from "../lib/chroma/embedded.js";
import { ChromaGate } from "../lib/chroma/gate.js";
import { silentLogger } from "../lib/log.js";

const GETS = Number(process.env.GETS ?? 500);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const dataDir = await mkdtemp(join(tmpdir(), "gate-bench-"));
const chroma = await startEmbeddedChroma({ dataDir });
const gate = new ChromaGate({ host: "127.0.0.1", port: await freePort(), target: () => chroma.url, log: silentLogger, isUp: () => chroma.up });
await gate.open("bench");
const gateUrl = `http://127.0.0.1:${gate.address()!.port}`;
const api = "/api/v2/tenants/default_tenant/databases/default_database";

async function call(base: string, method: string, path: string, body?: string): Promise<unknown> {
  const res = await fetch(`${base}${api}${path}`, { method, headers: { "content-type": "application/json" }, body });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : null;
}

const { id } = (await call(chroma.url, "POST", "/collections", JSON.stringify({ name: "bench" }))) as { id: string };
let next = 0;
function addBody(): string {
  const ids = Array.from({ length: 1000 }, () => `r${next++}`);
  return JSON.stringify({ ids, embeddings: ids.map((_, i) => Array.from({ length: 384 }, (_, d) => Math.sin(i * d + next))), documents: ids.map((r) => `document ${r}`), metadatas: ids.map((_, i) => ({ i })) });
}

async function gets(base: string): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < GETS; i++) await call(base, "POST", `/collections/${id}/get`, JSON.stringify({ ids: [`r${i}`], include: ["documents"] }));
  return performance.now() - t;
}
async function heartbeats(base: string): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < GETS; i++) {
    const res = await fetch(`${base}/api/v2/heartbeat`);
    await res.arrayBuffer();
  }
  return performance.now() - t;
}
async function add(base: string): Promise<number> {
  const body = addBody();
  const t = performance.now();
  await call(base, "POST", `/collections/${id}/add`, body);
  return performance.now() - t;
}

await call(chroma.url, "POST", `/collections/${id}/add`, addBody()); // warm up, and records to get
await gets(chroma.url);
await gets(gateUrl);
const results: Record<string, { heartbeats: number[]; gets: number[]; add: number[] }> = { direct: { heartbeats: [], gets: [], add: [] }, gate: { heartbeats: [], gets: [], add: [] } };
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, base] of [["direct", chroma.url], ["gate", gateUrl]] as const) {
    results[name]!.heartbeats.push(await heartbeats(base));
    results[name]!.gets.push(await gets(base));
    results[name]!.add.push(await add(base));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, r] of Object.entries(results)) {
  console.log(`${name.padEnd(6)} ${GETS} heartbeats: median ${median(r.heartbeats).toFixed(0)} ms (${((median(r.heartbeats) / GETS) * 1000).toFixed(0)} µs each)`);
  console.log(`${name.padEnd(6)} ${GETS} gets: median ${median(r.gets).toFixed(0)} ms (${((median(r.gets) / GETS) * 1000).toFixed(0)} µs each; rounds ${r.gets.map((x) => x.toFixed(0)).join(", ")}); add of 1,000: median ${median(r.add).toFixed(0)} ms (rounds ${r.add.map((x) => x.toFixed(0)).join(", ")})`);
}
console.log(`gate writes counted: ${gate.writes} (expected ${ROUNDS})`);
await gate.close();
await chroma.stop();
await rm(dataDir, { recursive: true, force: true });
