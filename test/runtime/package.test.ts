/**
 * The package from plain Node: `import("chroma-backup")` from another directory, with the
 * package linked into its node_modules, resolves package.json's exports to the compiled
 * dist/index.mjs (no tsx, no .ts file), with type declarations beside it. Built as
 * `npm run build` (and `prepare`, in a fresh clone) builds it.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
let app: string;

function run(file: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(file, args, { cwd, timeout: 120_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
}

beforeAll(async () => {
  const build = await run("npm", ["run", "build"], ROOT);
  expect(build.code, build.stderr).toBe(0);
  app = await mkdtemp(join(tmpdir(), "package-"));
  await mkdir(join(app, "node_modules"));
  await symlink(ROOT, join(app, "node_modules", "chroma-backup"), "dir");
}, 180_000);

afterAll(async () => {
  if (app) await rm(app, { recursive: true, force: true });
});

it("import('chroma-backup') works from plain node, and the types declare startService", async () => {
  const script = `const m = await import("chroma-backup");
    const { startService, createApp, compose, BackupService, loadConfig } = m;
    console.log(JSON.stringify({ url: import.meta.resolve("chroma-backup"), types: [startService, createApp, compose, BackupService, loadConfig].map((f) => typeof f) }));`;
  const result = await run(process.execPath, ["--input-type=module", "-e", script], app);
  expect(result.code, result.stderr).toBe(0);
  const out = JSON.parse(result.stdout.trim()) as { url: string; types: string[] };
  expect(out.url).toMatch(/\/dist\/index\.mjs$/);
  expect(out.types).toEqual(["function", "function", "function", "function", "function"]);

  const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { exports: { ".": { types: string } } };
  const types = await readFile(join(ROOT, pkg.exports["."].types), "utf8");
  expect(types).toContain("startService");
  const node = await readFile(join(ROOT, "dist", "types", "runtime", "node.d.ts"), "utf8");
  expect(node).toMatch(/export declare function startService\(/);
}, 60_000);
