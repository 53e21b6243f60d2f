import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect, it } from "vitest";

/** What must never reach the Worker: node:zlib (nodejs_compat's is not Node's, issue 14), Node-only drivers, the embedded Chroma, the Node server, the codec pool (package.json "imports": workerd gets codec-pool.none.ts). */
const FORBIDDEN_SOURCES = [/lib\/snapshot\/codec-pool\.ts$/, /lib\/storage\/fs\.ts$/, /lib\/storage\/replit\.ts$/, /lib\/storage\/node\.ts$/, /lib\/chroma\/embedded\.ts$/, /handlers\/server\.ts$/, /node_modules\/@replit\//, /node_modules\/@google-cloud\//, /node_modules\/chromadb/, /node_modules\/@hono\/node-server/];
const FORBIDDEN_IMPORTS = /(?:from\s*|import\s*\(\s*|require\s*\(\s*)["'](?:node:)?(?:fs|fs\/promises|child_process|net|os|path|http|https|zlib)["']/;

it("the Worker bundle builds with wrangler and holds no Node-only module", async () => {
  const out = await mkdtemp(join(tmpdir(), "worker-bundle-"));
  try {
    await promisify(execFile)(process.execPath, ["node_modules/wrangler/bin/wrangler.js", "deploy", "--dry-run", "--outdir", out], {
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
      timeout: 120_000,
    });
    const bundle = await readFile(join(out, "worker.js"), "utf8");
    const map = JSON.parse(await readFile(join(out, "worker.js.map"), "utf8")) as { sources: string[] };
    expect(map.sources.some((s) => s.endsWith("runtime/worker.ts"))).toBe(true);
    expect(map.sources.some((s) => s.endsWith("lib/storage/r2.ts"))).toBe(true);
    expect(map.sources.filter((s) => FORBIDDEN_SOURCES.some((re) => re.test(s)))).toEqual([]);
    expect(bundle.match(FORBIDDEN_IMPORTS)?.[0] ?? null).toBeNull();
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}, 150_000);
