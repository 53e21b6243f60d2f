/**
 * The CLI without --url next to a running service on the same DATA_DIR: it finds it
 * through DATA_DIR/service.json and talks to it over HTTP (no second Chroma); stale files
 * are ignored. The service runs in this process (startService), the CLI as a real process.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { startService, type RunningService } from "../../runtime/node.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "chroma-backup.js");

let chroma: TestChroma;
const tempDirs: string[] = [];

function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...serviceFreeEnv(), ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `discover-${name}-`));
  tempDirs.push(dir);
  return dir;
}

beforeAll(async () => {
  chroma = await startTestChroma();
}, 120_000);

afterAll(async () => {
  await chroma?.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

describe("the CLI finds the running service through DATA_DIR/service.json", () => {
  it("status without --url is answered by that service (its Chroma, its log), with the token from DATA_DIR/api-token", async () => {
    const dataDir = await tempDir("data");
    const lines: { level: LogLevel; message: string; fields?: LogFields }[] = [];
    // No BACKUP_API_TOKEN: the service generates one into DATA_DIR/api-token.
    const running: RunningService = await startService(
      { CHROMA_URL: chroma.url, STORAGE: "fs", BACKUP_DIR: join(dataDir, "store"), PORT: "0", HOST: "127.0.0.1", DATA_DIR: dataDir, RESTORE_ON_START: "never" },
      (level, message, fields) => lines.push({ level, message, fields }),
    );
    try {
      const file = join(dataDir, "service.json");
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const info = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
      expect(info).toMatchObject({ url: running.url, pid: process.pid, version: expect.any(String), started: expect.any(String) });
      expect(JSON.stringify(info)).not.toContain(running.token);

      // The CLI's own environment has no CHROMA_URL: in-process, it would start an embedded Chroma of its own.
      const result = await cli(["status", "--json", "--verbose"], { DATA_DIR: dataDir, STORAGE: "fs", BACKUP_DIR: join(dataDir, "store") });
      expect(result.code, result.stderr).toBe(0);
      const status = JSON.parse(result.stdout) as { chroma: { url: string; reachable: boolean } };
      expect(status.chroma).toMatchObject({ url: chroma.url, reachable: true });
      expect(result.stderr).not.toContain("started the embedded Chroma");
      expect(existsSync(join(dataDir, "chroma")), "the CLI started a Chroma on DATA_DIR/chroma").toBe(false);
      expect(lines.some((l) => l.message === "status" && l.fields?.status === 200), "the service logged no status request").toBe(true);
    } finally {
      await running.stop();
    }
    expect(existsSync(join(dataDir, "service.json")), "service.json left behind after stop").toBe(false);
  }, 60_000);

  it("a service file whose process is gone is stale: reported with --verbose, removed, and the CLI works in-process", async () => {
    const dataDir = await tempDir("stale");
    const dead = spawn(process.execPath, ["-e", ""]);
    const pid = dead.pid!;
    await new Promise((r) => dead.once("exit", r));
    const file = join(dataDir, "service.json");
    await writeFile(file, JSON.stringify({ url: `http://127.0.0.1:${await freePort()}`, pid, started: new Date().toISOString(), version: "0.0.0" }), { mode: 0o600 });
    const result = await cli(["list", "--json", "--verbose"], { DATA_DIR: dataDir, CHROMA_URL: chroma.url, STORAGE: "fs", BACKUP_DIR: join(dataDir, "store") });
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ snapshots: [] });
    expect(result.stderr).toContain("ignoring a stale service file: its process is gone (removed)");
    expect(existsSync(file)).toBe(false);
  }, 60_000);

  it("a service file whose process lives but whose URL does not answer is ignored, not removed", async () => {
    const dataDir = await tempDir("silent");
    const file = join(dataDir, "service.json");
    await writeFile(file, JSON.stringify({ url: `http://127.0.0.1:${await freePort()}`, pid: process.pid, started: new Date().toISOString(), version: "0.0.0" }), { mode: 0o600 });
    const result = await cli(["list", "--json", "--verbose"], { DATA_DIR: dataDir, CHROMA_URL: chroma.url, STORAGE: "fs", BACKUP_DIR: join(dataDir, "store") });
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ snapshots: [] });
    expect(result.stderr).toContain("ignoring a service file whose URL does not answer");
    expect(existsSync(file)).toBe(true);
  }, 60_000);
});
