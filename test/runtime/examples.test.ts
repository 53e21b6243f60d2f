/** examples/python-app: Python's chromadb cannot be installed here, so the example is syntax-checked. */
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

function hasPython(): boolean {
  try {
    execFileSync("python3", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const python = hasPython();
if (!python) console.log("skipping examples/python-app's syntax check: python3 is not installed");

it.skipIf(!python)("examples/python-app/main.py compiles (python3 -m py_compile)", async () => {
  const out = await mkdtemp(join(tmpdir(), "pyc-"));
  try {
    const result = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile("python3", ["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)", join(ROOT, "examples", "python-app", "main.py"), join(out, "main.pyc")], (err, _stdout, stderr) =>
        resolve({ code: err ? 1 : 0, stderr }),
      ),
    );
    expect(result.code, result.stderr).toBe(0);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
