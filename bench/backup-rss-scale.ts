/**
 * Issue 14's "memory independent of collection size": peak RSS of a CLI backup at N and
 * at 10 x N records (16 dims, real text), a first backup and an incremental one, and
 * their ratios (bar: <= 1.15x).
 *
 *   npx tsx bench/backup-rss-scale.ts [--records N=30000] [--scale K=10] [--dim D=16]
 *       [--repeats R=2] [--dir DIR] [--node-arg FLAG]... [--env K=V]... [--reseed]
 *
 * Seeds both sizes once into an embedded Chroma under DIR (default
 * $TMPDIR/chroma-backup-rss-scale, kept: seeding 330,000 records takes minutes; a later run
 * with the same --records/--scale/--dim reuses it), builds dist/ (so the CLI runs its
 * bundle, as an installed one does, not the sources under tsx's loader), then per size
 * and round: `/usr/bin/time -v node [--node-arg...] bin/chroma-backup.js backup
 * --collections ...` into a fresh fs store (first backup), 1% of the records' metadata
 * updated, the same command again (incremental: reads everything, writes the chunks of
 * the changed records). "Maximum resident set size" is the figure; the least of the
 * rounds counts (noise on a shared machine only adds). Prints a table and, as its last
 * line, JSON.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startEmbeddedChroma } from "../lib/chroma/embedded.js";
import { buildDist } from "../scripts/build.mjs";
import { collectionSpecs, generateCollections, loadCorpus, rest, seedCollection, splitCounts } from "./dataset.js";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

interface Flags {
  records: number;
  scale: number;
  dim: number;
  repeats: number;
  dir: string;
  nodeArgs: string[];
  /** Extra environment for the CLI (e.g. MALLOC_ARENA_MAX=2), as K=V. */
  env: Record<string, string>;
  reseed: boolean;
}

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { records: 30_000, scale: 10, dim: 16, repeats: 2, dir: join(tmpdir(), "chroma-backup-rss-scale"), nodeArgs: [], env: {}, reseed: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const [name, inline] = eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, undefined];
    const value = () => inline ?? argv[++i] ?? "";
    const int = () => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1) throw new Error(`${name} needs a positive integer`);
      return n;
    };
    if (name === "--records") flags.records = int();
    else if (name === "--scale") flags.scale = int();
    else if (name === "--dim") flags.dim = int();
    else if (name === "--repeats") flags.repeats = int();
    else if (name === "--dir") flags.dir = value();
    else if (name === "--node-arg") flags.nodeArgs.push(value());
    else if (name === "--env") {
      const kv = value();
      flags.env[kv.slice(0, kv.indexOf("="))] = kv.slice(kv.indexOf("=") + 1);
    } else if (name === "--reseed") flags.reseed = true;
    else throw new Error(`unknown flag ${arg} (see the comment at the top of bench/backup-rss-scale.ts)`);
  }
  return flags;
}

const log = (message: string) => process.stderr.write(`[rss-scale] ${message}\n`);

/** Seeds `sizes` (one set of collections each) into the Chroma at `url`, unless DIR says it holds them already. */
async function ensureSeeded(url: string, flags: Flags, sizes: number[], marker: string): Promise<void> {
  const want = JSON.stringify({ sizes, dim: flags.dim });
  if (!flags.reseed && existsSync(marker) && (await readFile(marker, "utf8")) === want) return;
  const corpus = loadCorpus(sizes.reduce((a, b) => a + b, 0));
  let offset = 0;
  for (const n of sizes) {
    const specs = collectionSpecs(`rss${n}`);
    for (const s of specs) await rest(url, "DELETE", `/collections/${s.name}`).catch(() => {});
    const started = performance.now();
    const collections = generateCollections({ specs, counts: splitCounts(n, specs), dim: flags.dim, seed: 7, corpus, corpusOffset: offset });
    for (const c of collections) await seedCollection(url, c);
    offset += n;
    log(`seeded ${n} records in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  }
  await writeFile(marker, want);
}

/** Every 100th record of the collection gets new metadata (a changed record for the next backup). */
async function changeOnePercent(url: string, name: string, round: number): Promise<number> {
  const { id } = (await rest(url, "GET", `/collections/${name}`)) as { id: string };
  const ids: string[] = [];
  for (let offset = 0; ; offset += 10_000) {
    const page = (await rest(url, "POST", `/collections/${id}/get`, JSON.stringify({ limit: 10_000, offset, include: [] }))) as { ids: string[] };
    for (let i = 0; i < page.ids.length; i++) if ((offset + i) % 100 === 0) ids.push(page.ids[i]!);
    if (page.ids.length < 10_000) break;
  }
  for (let i = 0; i < ids.length; i += 1000) {
    const batch = ids.slice(i, i + 1000);
    await rest(url, "POST", `/collections/${id}/update`, JSON.stringify({ ids: batch, metadatas: batch.map(() => ({ rev: `${Date.now()}-${round}` })) }));
  }
  return ids.length;
}

interface Run {
  peakRssMb: number;
  wallS: number;
  cpuS: number;
}

/** Whether bin/chroma-backup.js will run dist/cli.mjs (its check: every bundled source unchanged), not the sources under tsx. */
async function bundleIsCurrent(): Promise<boolean> {
  try {
    const { sources } = JSON.parse(await readFile(join(ROOT, "dist", "cli.sources.json"), "utf8")) as { sources: Record<string, string> };
    for (const [path, sha256] of Object.entries(sources)) if (createHash("sha256").update(await readFile(join(ROOT, path))).digest("hex") !== sha256) return false;
    return Object.keys(sources).length > 0;
  } catch {
    return false;
  }
}

/** The CLI's backup under /usr/bin/time -v. */
async function cliBackup(flags: Flags, env: NodeJS.ProcessEnv, collections: string[]): Promise<Run> {
  // A source edited during the run would put tsx's loader (~45 MB) into the figure.
  if (!(await bundleIsCurrent())) throw new Error("dist/cli.mjs is not current (a source changed since this run built it): the CLI would run under tsx");
  const args = ["-v", process.execPath, ...flags.nodeArgs, join(ROOT, "bin", "chroma-backup.js"), "backup", "--json", "--force", "--collections", collections.join(",")];
  return new Promise((resolve, reject) => {
    execFile("/usr/bin/time", args, { cwd: ROOT, env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`backup failed: ${err.message}\n${stdout.slice(-2000)}\n${stderr.slice(-4000)}`));
      // "<label> (unit): <value>", the value as seconds, m:ss or h:mm:ss.
      const field = (label: string) => {
        const line = stderr.split("\n").find((l) => l.trim().startsWith(label));
        return line ? line.slice(line.lastIndexOf(": ") + 2).split(":").reduce((a, x) => a * 60 + Number(x), 0) : NaN;
      };
      const kb = field("Maximum resident set size");
      if (!Number.isFinite(kb)) return reject(new Error(`no "Maximum resident set size" in /usr/bin/time's output:\n${stderr.slice(-2000)}`));
      resolve({ peakRssMb: Math.round((kb / 1024) * 10) / 10, wallS: Math.round(field("Elapsed (wall clock) time") * 10) / 10, cpuS: Math.round((field("User time") + field("System time")) * 100) / 100 });
    });
  });
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const sizes = [flags.records, flags.records * flags.scale];
  await mkdir(flags.dir, { recursive: true });
  const { ms } = await buildDist();
  log(`dist/ built in ${Math.round(ms)} ms; the CLI runs dist/cli.mjs`);
  const chroma = await startEmbeddedChroma({ dataDir: join(flags.dir, "chroma"), startTimeoutMs: 120_000 });
  const results: Record<number, { first: Run[]; incremental: Run[] }> = {};
  try {
    await ensureSeeded(chroma.url, flags, sizes, join(flags.dir, "seeded.json"));
    for (const n of sizes) results[n] = { first: [], incremental: [] };
    for (let round = 0; round < flags.repeats; round++) {
      for (const n of sizes) {
        const names = collectionSpecs(`rss${n}`).map((s) => s.name);
        const work = join(flags.dir, "runs", `${n}`);
        await rm(work, { recursive: true, force: true });
        await mkdir(work, { recursive: true });
        const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, CHROMA_URL: chroma.url, STORAGE: "fs", DATA_DIR: join(work, "data"), BACKUP_DIR: join(work, "store"), ...flags.env };
        const first = await cliBackup(flags, env, names);
        let changed = 0;
        for (const name of names) changed += await changeOnePercent(chroma.url, name, round);
        const incremental = await cliBackup(flags, env, names);
        results[n]!.first.push(first);
        results[n]!.incremental.push(incremental);
        log(`round ${round + 1}, ${n} records: first ${first.peakRssMb} MB (${first.wallS} s), incremental ${incremental.peakRssMb} MB (${incremental.wallS} s, ${changed} changed)`);
      }
    }
  } finally {
    await chroma.stop();
  }
  const best = (runs: Run[]) => Math.min(...runs.map((r) => r.peakRssMb));
  const [small, large] = sizes as [number, number];
  const summary = {
    records: sizes,
    dim: flags.dim,
    nodeArgs: flags.nodeArgs,
    env: flags.env,
    firstPeakMb: [best(results[small]!.first), best(results[large]!.first)],
    incrementalPeakMb: [best(results[small]!.incremental), best(results[large]!.incremental)],
    firstRatio: Math.round((best(results[large]!.first) / best(results[small]!.first)) * 1000) / 1000,
    incrementalRatio: Math.round((best(results[large]!.incremental) / best(results[small]!.incremental)) * 1000) / 1000,
    runs: results,
  };
  console.log(`backup peak RSS (least of ${flags.repeats}), ${small} vs ${large} records x ${flags.dim} dims, CLI ${[...Object.entries(flags.env).map(([k, v]) => `${k}=${v}`), "node", ...flags.nodeArgs].join(" ")}:`);
  console.log(`  first:       ${summary.firstPeakMb[0]} MB vs ${summary.firstPeakMb[1]} MB = ${summary.firstRatio}x (bar <= 1.15x) ${summary.firstRatio <= 1.15 ? "PASS" : "FAIL"}`);
  console.log(`  incremental: ${summary.incrementalPeakMb[0]} MB vs ${summary.incrementalPeakMb[1]} MB = ${summary.incrementalRatio}x (bar <= 1.15x) ${summary.incrementalRatio <= 1.15 ? "PASS" : "FAIL"}`);
  console.log(JSON.stringify(summary));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
