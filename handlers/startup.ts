import type { Hono } from "hono";
import type { RestoreOnStart } from "../lib/config.js";
import type { Logger } from "../lib/log.js";
import type { AppEnv } from "./context.js";

/**
 * The startup hook: asks the restore handler, before the server accepts connections, to
 * put the newest snapshot back (`if-empty`: only into an empty Chroma; `always`:
 * replace, after a safety snapshot). The newest snapshot that verifies is used; any newer
 * one that does not is skipped and logged loudly. A failure is logged loudly and leaves Chroma as it
 * was (restores build collections aside and swap them in only when complete).
 */
export async function runStartupRestore(app: Hono<AppEnv>, token: string, mode: RestoreOnStart, log: Logger): Promise<unknown> {
  if (mode === "never") {
    log("info", "startup restore skipped (RESTORE_ON_START=never)");
    return null;
  }
  const response = await app.request("/restore", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ snapshot: "latest", ifEmpty: mode === "if-empty", fallbackToVerified: true }),
  });
  const body = (await response.json()) as { restored?: boolean; reason?: string; snapshot?: string; collections?: unknown[]; skipped?: unknown[]; error?: unknown };
  for (const skipped of (body.skipped ?? []) as { id: string; reason: string }[]) {
    log("error", "STARTUP RESTORE SKIPPED A DAMAGED SNAPSHOT", { snapshot: skipped.id, reason: skipped.reason, restoring: body.snapshot ?? null });
  }
  if (!response.ok) {
    log("error", "STARTUP RESTORE FAILED: Chroma was left as it was; the service starts anyway so you can inspect /status", { status: response.status, error: body.error });
    return body;
  }
  if (body.restored) log("info", "startup restore: restored the newest snapshot", { snapshot: body.snapshot, collections: body.collections, skipped: body.skipped });
  else log("info", "startup restore: nothing restored", { reason: body.reason, snapshot: body.snapshot });
  return body;
}
