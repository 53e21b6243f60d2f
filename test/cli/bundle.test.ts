/**
 * bin/chroma-backup.js runs the compiled dist/cli.mjs only while dist/cli.sources.json
 * matches every source on disk, and the TypeScript sources under tsx otherwise. Run on a
 * copy of the repository (its node_modules linked), so the real dist/ is left alone.
 */
import { execFile } from "node:child_process";
import { appendFile, cp, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildDist } from "../../scripts/build.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const MARK = "ran dist/cli.mjs";

let copy: string;

function version(): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [join(copy, "bin", "chroma-backup.js"), "--version"], { cwd: copy, timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve({ stdout, stderr }),
    ),
  );
}

beforeAll(async () => {
  copy = await mkdtemp(join(tmpdir(), "cli-bundle-"));
  // Timestamps kept: a source modified after the build started keeps the CLI on the sources.
  for (const path of ["bin", "cli", "runtime", "handlers", "lib", "scripts", "index.ts", "package.json", "tsconfig.json"]) {
    await cp(join(ROOT, path), join(copy, path), { recursive: true, preserveTimestamps: true });
  }
  await symlink(join(ROOT, "node_modules"), join(copy, "node_modules"), "dir");
  await buildDist({ root: copy });
  // Marks the bundle, so a run shows which of the two it took.
  await appendFile(join(copy, "dist", "cli.mjs"), `\nprocess.stderr.write(${JSON.stringify(MARK + "\n")});\n`);
}, 60_000);

afterAll(async () => {
  if (copy) await rm(copy, { recursive: true, force: true });
});

describe("bin/chroma-backup.js", () => {
  it("lists every source of the bundle with its sha256", async () => {
    const { sources } = JSON.parse(await readFile(join(copy, "dist", "cli.sources.json"), "utf8")) as { sources: Record<string, string> };
    expect(Object.keys(sources)).toEqual(expect.arrayContaining(["cli/main.ts", "cli/inprocess.ts", "handlers/app.ts", "package.json"]));
    for (const sha of Object.values(sources)) expect(sha).toMatch(/^[0-9a-f]{64}$/);
  });

  it("runs the bundle when it was built from the sources on disk", async () => {
    const { stdout, stderr } = await version();
    expect(stdout.trim()).toMatch(/^chroma-backup \d+\.\d+\.\d+/);
    expect(stderr).toContain(MARK);
  });

  it("runs the sources when one changed since the build, and the bundle again once it is back", async () => {
    const usage = join(copy, "cli", "usage.ts");
    const original = await readFile(usage);
    await appendFile(usage, "\n// edited after the build\n");
    const edited = await version();
    expect(edited.stdout.trim()).toMatch(/^chroma-backup \d+\.\d+\.\d+/);
    expect(edited.stderr).not.toContain(MARK);

    // A version bump (package.json is a source too) shows from the sources at once.
    const pkgPath = join(copy, "package.json");
    const pkgBytes = await readFile(pkgPath);
    const pkg = JSON.parse(pkgBytes.toString("utf8")) as Record<string, unknown>;
    await writeFile(pkgPath, JSON.stringify({ ...pkg, version: "9.9.9" }));
    expect((await version()).stdout.trim()).toBe("chroma-backup 9.9.9");

    // Content decides, not timestamps: with the same bytes again the bundle is current.
    await writeFile(pkgPath, pkgBytes);
    await writeFile(usage, original);
    expect((await version()).stderr).toContain(MARK);
  }, 60_000);
});
