import type { AppContext } from "./context.js";
import { HttpError } from "./errors.js";

/**
 * `POST /restore/skip-startup`: an operator opens the service without the data while the
 * startup restore is running or failing. Logged at warn; the runtime stops retrying.
 */
export function skipStartupRestore(c: AppContext): Response {
  const { service, log } = c.get("deps");
  const was = service.startupRestore;
  if (!service.restorePending) {
    throw new HttpError(409, "conflict", `no startup restore is pending (it is ${was.state})`);
  }
  service.markStartupRestore("overridden", `skipped by POST /restore/skip-startup while ${was.state}${was.lastError ? `: ${was.lastError}` : ""}`);
  log("warn", "STARTUP RESTORE SKIPPED BY AN OPERATOR: the service opens without the data it would have restored", { was: was.state, detail: was.lastError, requestId: c.get("requestId") });
  return c.json({ startupRestore: "overridden", was: was.state });
}
