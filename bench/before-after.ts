/**
 * One command, two engines: `npm run bench` at an earlier commit and at this checkout,
 * alternately on the same machine, with the same flags, and one table of both.
 *
 *   npx tsx bench/before-after.ts [--ref REV=0e072f7] [--rounds N=1] [-- bench flags]
 *
 * REV defaults to 0e072f7, the commit before issue 14 (node:zlib, the old pipeline). It is
 * checked out as a detached worktree under .bench-before/<rev> (kept between runs) that
 * shares this checkout's node_modules, so both engines run on the same library versions
 * and only the engine differs. Each round runs the earlier engine, then this one; a
 * figure's best over the rounds counts (the machine is shared: lower is less disturbed).
 * Bench flags after `--` go to both (e.g. `-- --skip-scale`, `-- --records 100000`).
 * Writes bench/results/before-after.json and prints a table with the ratios of both.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

function parseArgs(argv: string[]): { ref: string; rounds: number; benchFlags: string[] } {
  let ref = "0e072f7";
  let rounds = 1;
  const dash = argv.indexOf("--");
  const own = dash === -1 ? argv : argv.slice(0, dash);
  for (let i = 0; i < own.length; i++) {
    if (own[i] === "--ref") ref = own[++i] ?? ref;
    else if (own[i] === "--rounds") rounds = Number(own[++i]);
    else throw new Error(`unknown option ${own[i]} (--ref REV, --rounds N, then -- and the bench's flags)`);
  }
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds needs a whole number of at least 1");
  return { ref, rounds, benchFlags: dash === -1 ? [] : argv.slice(dash + 1) };
}

const git = (...args: string[]) => execFileSync("git", args, { cwd: ROOT, encoding: "utf8" }).trim();

async function worktreeAt(ref: string): Promise<string> {
  const commit = git("rev-parse", "--short", `${ref}^{commit}`);
  const dir = join(ROOT, ".bench-before", commit);
  if (!existsSync(dir)) {
    await mkdir(join(ROOT, ".bench-before"), { recursive: true });
    git("worktree", "add", "--detach", dir, commit);
  }
  if (!existsSync(join(dir, "node_modules"))) await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}

function runBench(cwd: string, flags: string[], out: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/run.ts", ...flags, "--out", out], { cwd, stdio: ["ignore", "ignore", "inherit"] });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`the bench in ${cwd} exited with ${code}`))));
  });
}

type Figures = Record<string, number | null>;

/** Lower is better for every figure the table shows, so the best of the rounds is the minimum. */
function best(runs: Figures[]): Figures {
  const out: Figures = {};
  for (const key of Object.keys(runs[0]!)) {
    const values = runs.map((r) => r[key]).filter((v): v is number => typeof v === "number");
    out[key] = values.length ? Math.min(...values) : null;
  }
  return out;
}

const ROWS: Array<{ name: string; bar: string; value: (f: Figures) => number | null; digits: number }> = [
  { name: "backup / raw read", bar: "<= 1.15", value: (f) => f.backupMs! / f.rawReadMs!, digits: 3 },
  { name: "restore / raw write", bar: "<= 1.10", value: (f) => f.restoreMs! / f.rawWriteMs!, digits: 3 },
  { name: "snapshot / float32 + gzipped text", bar: "<= 0.90", value: (f) => f.snapshotBytes! / f.float32PlusGzTextBytes!, digits: 3 },
  { name: "verify / raw sha256", bar: "<= 2.0", value: (f) => f.verifyMs! / f.rawHashMs!, digits: 3 },
  { name: "backup peak RSS (MB), 1x", bar: "", value: (f) => f.backupPeakRssMb ?? null, digits: 1 },
  { name: "restore peak RSS (MB), 1x", bar: "", value: (f) => f.restorePeakRssMb ?? null, digits: 1 },
  { name: "backup peak RSS (MB), scale run", bar: "<= 170 at 100k", value: (f) => f.scaleBackupPeakRssMb ?? null, digits: 1 },
  { name: "restore peak RSS (MB), scale run", bar: "<= 170 at 100k", value: (f) => f.scaleRestorePeakRssMb ?? null, digits: 1 },
];

const { ref, rounds, benchFlags } = parseArgs(process.argv.slice(2));
const beforeDir = await worktreeAt(ref);
const tmp = await mkdtemp(join(tmpdir(), "before-after-"));
const before: Figures[] = [];
const after: Figures[] = [];
for (let round = 1; round <= rounds; round++) {
  for (const [label, cwd, runs] of [["before", beforeDir, before], ["after", ROOT, after]] as const) {
    process.stderr.write(`\n[before-after] round ${round}/${rounds}: ${label} (${cwd})\n`);
    const out = join(tmp, `${label}-${round}.json`);
    await runBench(cwd, benchFlags, out);
    runs.push(JSON.parse(await readFile(out, "utf8")) as Figures);
  }
}
const b = best(before);
const a = best(after);
const afterCommit = git("rev-parse", "--short", "HEAD");
const rows = ROWS.map((r) => {
  const [vb, va] = [r.value(b), r.value(a)];
  const show = (v: number | null) => (v === null || !Number.isFinite(v) ? "-" : v.toFixed(r.digits));
  return { figure: r.name, bar: r.bar, before: show(vb), after: show(va) };
});
console.log(`\nbefore: ${git("rev-parse", "--short", `${ref}^{commit}`)}, after: ${afterCommit}${git("status", "--porcelain", "--", "lib").length ? " + uncommitted changes in lib/" : ""}; ${rounds} round(s), flags: ${benchFlags.join(" ") || "(none)"}\n`);
console.log("| figure | bar | before | after |\n| --- | --- | --- | --- |");
for (const r of rows) console.log(`| ${r.figure} | ${r.bar} | ${r.before} | ${r.after} |`);
await rm(tmp, { recursive: true, force: true });
const file = join(ROOT, "bench", "results", "before-after.json");
await writeFile(file, JSON.stringify({ before: { ref, runs: before }, after: { commit: afterCommit, runs: after }, benchFlags, rows }, null, 2) + "\n");
console.log(`\nwritten to ${file}`);
