import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** A Chroma bindings package (the Rust server behind a Node module) installed for this platform. */
export interface ChromaBindings {
  version: string;
  /** Absolute path of its native module. */
  module: string;
}

/**
 * The Chroma bindings installed for this platform, newest first: the package the chromadb
 * client depends on (on linux-x64-gnu pinned to 1.0.5 by package.json's override: newer
 * ones need glibc 2.38+) and its npm alias `<name>-1.3` (1.3.4) shipped beside it as an
 * optional dependency. The embedded Chroma starts the newest that loads.
 */
export function installedChromaBindings(): ChromaBindings[] {
  const libc = process.platform === "linux" ? "-gnu" : "";
  const name = `chromadb-js-bindings-${process.platform}-${process.arch}${libc}`;
  const ours = createRequire(import.meta.url);
  const places = [
    { from: createRequire(ours.resolve("chromadb")), pkg: name },
    { from: ours, pkg: `${name}-1.3` },
  ];
  const found = new Map<string, ChromaBindings>();
  for (const { from, pkg: pkgName } of places) {
    try {
      const path = from.resolve(`${pkgName}/package.json`);
      const pkg = JSON.parse(readFileSync(path, "utf8")) as { version?: unknown; main?: unknown };
      if (typeof pkg.version !== "string" || typeof pkg.main !== "string") continue;
      found.set(pkg.version, { version: pkg.version, module: join(dirname(path), pkg.main) });
    } catch {
      // not installed on this platform
    }
  }
  return [...found.values()].sort((a, b) => compareVersions(b.version, a.version));
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map(Number);
  const pb = b.split(/[.-]/).map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] || 0) - (pb[i] || 0);
    if (d !== 0) return d;
  }
  return 0;
}

let loadable: Promise<string> | undefined;

/**
 * The version of the newest installed bindings that load here: the Chroma the embedded
 * runtime will start, known before it starts (restore images are only used by the Chroma
 * version that made them). Loads them in a child process (about 0.2 s, once per process;
 * concurrent callers share it) because a native module that fails to load can leave the
 * loading process unstable; "unknown" when none loads. Asynchronous, so the startup
 * restore reads the store meanwhile.
 */
export function loadableChromaVersion(): Promise<string> {
  loadable ??= new Promise((resolve) => {
    execFile(process.execPath, ["-e", probeSource()], { env: probeEnv(), encoding: "utf8", timeout: 30_000 }, (err, out) => resolve(err ? "unknown" : parseProbe(out)));
  });
  return loadable;
}

const probeSource = () => `for (const c of JSON.parse(process.env.${BINDINGS_ENV})) { try { require(c.module); process.stdout.write(c.version); break; } catch {} }`;
const probeEnv = () => ({ ...process.env, [BINDINGS_ENV]: JSON.stringify(installedChromaBindings()) });
const parseProbe = (out: string) => out.trim() || "unknown";

const BINDINGS_ENV = "CHROMA_BACKUP_BINDINGS";
const LAUNCHER_ENV = "CHROMA_BACKUP_LAUNCHER";
/** The launcher's stderr line naming the bindings that loaded. */
export const BINDINGS_LOADED = "chroma-backup: bindings loaded ";
/** Its line for bindings that did not load, with the reason. */
export const BINDINGS_NOT_LOADED = "chroma-backup: bindings did not load ";

/**
 * What chromadb's `dist/cli.mjs` does (require the platform's bindings, then
 * `binding.cli(["chroma", ...args])`), over a list of bindings tried newest first; it says
 * on stderr which loaded and why the others did not (e.g. "GLIBC_2.38' not found"). Its
 * source travels in the environment so that `ps` shows a short command line.
 */
const LAUNCHER_SOURCE = `
const { writeSync } = require("node:fs");
let binding = null;
for (const candidate of JSON.parse(process.env.${BINDINGS_ENV})) {
  try {
    binding = require(candidate.module);
    writeSync(2, ${JSON.stringify(BINDINGS_LOADED)} + candidate.version + "\\n");
    break;
  } catch (err) {
    writeSync(2, ${JSON.stringify(BINDINGS_NOT_LOADED)} + candidate.version + " " + String(err && err.message).split("\\n")[0] + "\\n");
  }
}
if (!binding) process.exit(70);
process.on("SIGINT", () => process.exit(0));
binding.cli(["chroma", ...process.argv.slice(1)]);
`;

/** The launcher's script argument: how a Chroma of ours is recognised in /proc (isChromaOn). */
export const LAUNCHER_SCRIPT = `eval(process.env.${LAUNCHER_ENV})`;

/** The node arguments and environment that start `chroma <args>` on the newest of `bindings` that loads. */
export function launcher(bindings: ChromaBindings[], args: string[]): { args: string[]; env: Record<string, string> } {
  return {
    args: ["-e", LAUNCHER_SCRIPT, "--", ...args],
    env: { [LAUNCHER_ENV]: LAUNCHER_SOURCE, [BINDINGS_ENV]: JSON.stringify(bindings) },
  };
}
