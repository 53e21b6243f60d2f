/**
 * The embedded Chroma starts the newest installed bindings that load (lib/chroma/embedded.ts):
 * both packages are installed (1.0.5, and 1.3.4 through the npm alias); which one runs is
 * told by the server itself (1.2+ answers a created collection with its `schema`, 1.0 without
 * one), not only by what the launcher says.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { installedChromaBindings } from "../../lib/chroma/launcher.js";
import type { Logger } from "../../lib/log.js";
import { newerChromaSkipped } from "../fixtures/chroma-newer.js";

const SCRIPT = fileURLToPath(new URL("../../scripts/chroma-newer.sh", import.meta.url));
/** The 1.3 bindings need glibc 2.38 (this machine: Debian 12, 2.36). */
const glibc = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime ?? "0";
const newerLoadsHere = Number(glibc.split(".")[0]) > 2 || (Number(glibc.split(".")[0]) === 2 && Number(glibc.split(".")[1]) >= 38);

const running: { chroma: EmbeddedChroma; dir: string }[] = [];
afterEach(async () => {
  for (const { chroma, dir } of running.splice(0)) {
    await chroma.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

function recorder(): { log: Logger; lines: { level: string; message: string }[] } {
  const lines: { level: string; message: string }[] = [];
  return { lines, log: (level, message) => void lines.push({ level, message }) };
}

async function start(options: Omit<Parameters<typeof startEmbeddedChroma>[0], "dataDir">): Promise<EmbeddedChroma> {
  const dir = await mkdtemp(join(tmpdir(), "chroma-bindings-"));
  const chroma = await startEmbeddedChroma({ dataDir: dir, ...options });
  running.push({ chroma, dir });
  return chroma;
}

/** Whether the server answers a created collection with a `schema` (Chroma 1.2+). */
async function reportsSchema(url: string): Promise<boolean> {
  const res = await fetch(`${url}/api/v2/tenants/default_tenant/databases/default_database/collections`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: `which-${Date.now()}` }),
  });
  expect(res.status).toBe(200);
  const schema = ((await res.json()) as { schema?: unknown }).schema;
  return schema !== undefined && schema !== null;
}

describe("the embedded Chroma's bindings", () => {
  it.runIf(process.platform === "linux" && process.arch === "x64")("both bindings are installed, newest first", () => {
    expect(installedChromaBindings().map((b) => b.version)).toEqual(["1.3.4", "1.0.5"]);
  });

  it("starts the newest that loads; when it falls back, one log line says why; the version is the one that started", async () => {
    const { log, lines } = recorder();
    const chroma = await start({ log, backoff: { initialMs: 50 } });
    const fallbacks = lines.filter((l) => l.message.includes("newer ones did not load"));
    if (newerLoadsHere) {
      expect(chroma.version).toBe("1.3.4");
      expect(fallbacks).toEqual([]);
      expect(await reportsSchema(chroma.url)).toBe(true);
      return;
    }
    console.info(`glibc ${glibc}: the 1.3.4 bindings cannot load here, so the fallback to 1.0.5 is what this test checks`);
    expect(chroma.version).toBe("1.0.5");
    expect(await reportsSchema(chroma.url)).toBe(false);
    expect(fallbacks).toHaveLength(1);
    expect(fallbacks[0]!.message).toMatch(/^the embedded Chroma runs the 1\.0\.5 bindings: newer ones did not load \(1\.3\.4 .*GLIBC_2\.38' not found/);
    // A restart starts the same again, without logging the same fallback a second time.
    const killedPid = chroma.pid!;
    process.kill(killedPid, "SIGKILL");
    await expect.poll(() => chroma.pid !== null && chroma.pid !== killedPid && chroma.up, { timeout: 30_000 }).toBe(true);
    expect(chroma.version).toBe("1.0.5");
    expect(lines.filter((l) => l.message.includes("newer ones did not load"))).toHaveLength(1);
  }, 60_000);

  it("a start where no bindings load fails, saying why", async () => {
    const { log } = recorder();
    const missing = join(tmpdir(), "no-such-bindings.node");
    await expect(start({ log, bindings: [{ version: "9.9.9", module: missing }] })).rejects.toThrow(/exited \(code 70\).*bindings did not load 9\.9\.9 Cannot find module/s);
  }, 30_000);

  it("under a newer glibc's loader (scripts/chroma-newer.sh), the shipped 1.3.4 bindings start", async (ctx) => {
    let prefix: string[];
    try {
      const { stdout } = await promisify(execFile)("bash", [SCRIPT], { timeout: 300_000 });
      prefix = stdout.trim().split(/\s+/).slice(0, -1); // without its own cli.mjs: the loader and node
    } catch (err) {
      if (!newerChromaSkipped()) throw err;
      console.warn(`SKIPPED (CHROMA_NEWER=skip; scripts/chroma-newer.sh failed: ${(err as Error).message}): test/chroma/bindings.test.ts, 1.3.4 embedded`);
      return ctx.skip();
    }
    const { log, lines } = recorder();
    const chroma = await start({ log, nodeCommand: prefix });
    expect(chroma.version).toBe("1.3.4");
    expect(await reportsSchema(chroma.url)).toBe(true);
    expect(lines.filter((l) => l.message.includes("did not load"))).toEqual([]);
  }, 320_000);
});
