import { resolve } from "node:path";
import type { Env } from "../lib/config.js";
import type { Logger } from "../lib/log.js";
import { pidAlive, readServiceFile, removeServiceFile, serviceFilePath } from "../runtime/service-file.js";

/**
 * The URL of the service running on this DATA_DIR, found through DATA_DIR/service.json,
 * or null. A file whose process is gone is stale and removed; one whose URL does not
 * answer /health is ignored. Both are reported at the CLI's debug level (--verbose).
 */
export async function findRunningService(env: Env, log: Logger, timeoutMs = 2000): Promise<string | null> {
  const dataDir = resolve(env.DATA_DIR || "./data");
  const info = await readServiceFile(dataDir);
  if (!info) return null;
  const path = serviceFilePath(dataDir);
  if (!pidAlive(info.pid)) {
    log("info", "ignoring a stale service file: its process is gone (removed)", { path, pid: info.pid, url: info.url });
    await removeServiceFile(dataDir, info.pid).catch(() => {});
    return null;
  }
  try {
    const res = await fetch(new URL("/health", info.url), { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json()) as { ok?: unknown };
    if (res.ok && body.ok === true) return info.url;
    log("info", "ignoring a service file whose URL does not answer /health as chroma-backup", { path, pid: info.pid, url: info.url, status: res.status });
  } catch (err) {
    log("info", "ignoring a service file whose URL does not answer", { path, pid: info.pid, url: info.url, error: (err as Error).message });
  }
  return null;
}
