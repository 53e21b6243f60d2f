#!/usr/bin/env node
// The `chroma-backup` command (cli/main.ts; usage: `chroma-backup --help`).
//
// Runs the compiled bundle dist/cli.mjs (built by `npm run build` and by every `npm start`,
// scripts/build.mjs) when it was built from exactly the sources now on disk:
// dist/cli.sources.json lists every file bundled with its sha256, and all must match.
// Otherwise (no build yet, or a source edited since) it registers tsx and runs the
// TypeScript sources, at the cost of tsx's loader (~45 MB more RSS, and start-up time).
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL, URL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

function bundleIsCurrent() {
  try {
    const { sources } = JSON.parse(readFileSync(join(root, "dist", "cli.sources.json"), "utf8"));
    const entries = Object.entries(sources);
    return entries.length > 0 && entries.every(([path, sha256]) => createHash("sha256").update(readFileSync(join(root, path))).digest("hex") === sha256);
  } catch {
    return false; // no build, or a source gone
  }
}

let main;
if (bundleIsCurrent()) {
  process.setSourceMapsEnabled(true); // stack traces point at the .ts sources
  main = await import(pathToFileURL(join(root, "dist", "cli.mjs")).href);
} else {
  const { register } = await import("tsx/esm/api");
  const tsconfig = join(root, "tsconfig.json");
  register({ tsconfig: existsSync(tsconfig) ? tsconfig : false });
  main = await import("../cli/main.ts");
}
await main.run();
