#!/usr/bin/env node
/**
 * `npm run build`, and the first step of every `npm start`: bundles the Node entries with
 * esbuild (~0.3 s), so that production runs plain `node` on JavaScript. `node --import tsx`
 * costs ~45 MB of RSS on its own (tsx's loader hooks run a second V8 isolate in a thread of
 * their own, plus the esbuild service), 30-40 MB on the idle service, which matters on the
 * memory-tight hosts this is for. `npm run dev` still runs the sources under `tsx watch`.
 *
 *   dist/server.mjs   runtime/node.ts, what `npm start` runs
 *   dist/index.mjs    index.ts, the package's entry (`import ... from "chroma-backup"`;
 *                     its type declarations come from `tsc -p tsconfig.build.json`)
 *   dist/cli.mjs      cli/main.ts, what bin/chroma-backup.js runs while
 *                     dist/cli.sources.json says it was built from the sources on disk
 *   dist/chunks/      code loaded on demand (the replit and s3 drivers, ...)
 *
 * Packages stay external (resolved from node_modules at run time, which is why a bundle
 * has to live under the repository), and each bundle has a source map next to it for
 * `node --enable-source-maps`. Output files are replaced by rename and only when their
 * bytes change, so a process that is loading a bundle (another `npm start`, a CLI call)
 * never reads a half-written file; chunks are named by content and never deleted here,
 * so a running service can still load the chunks of the build it started from.
 *
 * bench/run.ts bundles bench/worker.ts with bundleForNode() too.
 */
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

// esbuild's buildSync, without its worker thread, runs esbuild as a synchronous child
// process that has exited (and been reaped) when it returns. The async API's long-lived
// esbuild service would outlive `node scripts/build.mjs` by a moment and be left for init
// to reap: a zombie in npm start's process group.
const workerThreads = process.env.ESBUILD_WORKER_THREADS;
process.env.ESBUILD_WORKER_THREADS = "0"; // read once, when esbuild is loaded
const { buildSync } = await import("esbuild");
if (workerThreads === undefined) delete process.env.ESBUILD_WORKER_THREADS;
else process.env.ESBUILD_WORKER_THREADS = workerThreads;

/** The repository root (this file is scripts/build.mjs). */
export const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** Writes `bytes` to `path` by rename, unless the file already holds exactly them. */
async function replaceFile(path, bytes) {
  try {
    const current = await readFile(path);
    if (current.equals(bytes)) return false;
  } catch {
    // not there yet
  }
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(temp, bytes);
  await rename(temp, path);
  return true;
}

/**
 * Bundles `entryPoints` ({ outName: sourcePath }, paths relative to `root`) into `outdir`
 * as `<outName>.mjs` (`<outName>-<hash>.mjs` with `hashNames`: one file per content, so
 * a bundle is never replaced by another), for Node 20, ESM, packages external, with
 * source maps.
 *
 * Each call is its own build (its own code splitting): an entry module's code stays in its
 * entry file, so `import.meta.url` there is the entry's URL (runtime/node.ts compares
 * it with process.argv[1]). Returns the entry files, the files rewritten, the inputs
 * (paths relative to root), when the build started (ms since the epoch) and how long it took.
 */
export async function bundleForNode(entryPoints, outdir, { root = ROOT, hashNames = false } = {}) {
  const startedAt = Date.now();
  const started = performance.now();
  const result = buildSync({
    absWorkingDir: root,
    entryPoints,
    outdir: resolve(root, outdir),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    // Dynamic imports (the cloud storage drivers) stay lazy: in one file their packages'
    // imports would be hoisted to the top and loaded at startup.
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
    entryNames: hashNames ? "[name]-[hash]" : "[name]",
    outExtension: { ".js": ".mjs" },
    sourcemap: "linked",
    // Stack traces need the mappings only; Node keeps a loaded map in memory.
    sourcesContent: false,
    metafile: true,
    write: false,
    logLevel: "warning",
  });
  const outputs = Object.entries(result.metafile.outputs);
  const entries = Object.values(entryPoints).map((input) => {
    const output = outputs.find(([path, o]) => o.entryPoint === input && path.endsWith(".mjs"));
    if (!output) throw new Error(`esbuild wrote no output for ${input}`);
    return resolve(root, output[0]);
  });
  // Chunks first, entries last: an entry is never there before a chunk it imports.
  const rank = (path) => (entries.includes(path) ? 2 : path.endsWith(".map") ? 1 : 0);
  const files = [...result.outputFiles].sort((a, b) => rank(a.path) - rank(b.path));
  const written = [];
  for (const file of files) if (await replaceFile(file.path, Buffer.from(file.contents))) written.push(relative(root, file.path));
  return { entries, written, inputs: Object.keys(result.metafile.inputs).sort(), startedAt, ms: performance.now() - started };
}

/**
 * The sha256 of every input of `bundle`, or null when one was modified after the build
 * started or is gone (the text on disk may not be the text bundled). The margin covers
 * the coarse clock the kernel stamps modification times with.
 */
async function inputHashes(bundle, root) {
  const sources = {};
  try {
    for (const input of bundle.inputs) {
      const path = join(root, input);
      if ((await stat(path)).mtimeMs >= bundle.startedAt - 50) return null;
      sources[input] = sha256(await readFile(path));
    }
  } catch {
    return null; // removed meanwhile
  }
  return sources;
}

/** The service and the CLI into dist/ (what `npm run build` does). */
export async function buildDist({ root = ROOT } = {}) {
  const started = performance.now();
  const server = await bundleForNode({ server: "runtime/node.ts" }, "dist", { root });
  const index = await bundleForNode({ index: "index.ts" }, "dist", { root });
  const cli = await bundleForNode({ cli: "cli/main.ts" }, "dist", { root });
  // What bin/chroma-backup.js checks before it runs dist/cli.mjs: the sources it was built
  // from. Left out when a source changed during the build: the CLI then runs from source.
  const list = join(root, "dist", "cli.sources.json");
  const sources = await inputHashes(cli, root);
  if (!sources) await rm(list, { force: true });
  else if (await replaceFile(list, Buffer.from(JSON.stringify({ sources }, null, 1) + "\n"))) cli.written.push(relative(root, list));
  return { written: [...server.written, ...index.written, ...cli.written], ms: performance.now() - started };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { written, ms } = await buildDist();
    process.stderr.write(`build: dist/server.mjs, dist/index.mjs, dist/cli.mjs ${written.length ? `(${written.length} file(s) written)` : "(unchanged)"} in ${Math.round(ms)} ms\n`);
  } catch (err) {
    // esbuild has already printed the errors with their locations.
    if (!(err && typeof err === "object" && "errors" in err)) console.error(err);
    process.exit(1);
  }
}
