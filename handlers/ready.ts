import type { AppContext } from "./context.js";

/**
 * Readiness for platform health checks and hooks that must wait for the data: the
 * runtime's probe (startup restore finished, Chroma answers). Without one, the startup
 * restore state alone decides.
 */
export async function ready(c: AppContext): Promise<Response> {
  const { readiness, service } = c.get("deps");
  let answer: { ready: boolean; reason?: string };
  if (readiness) answer = await readiness();
  else {
    const { state, lastError: detail } = service.startupRestore;
    answer = service.restorePending ? { ready: false, reason: `startup restore ${state}${detail ? `: ${detail}` : ""}` } : { ready: true };
  }
  return answer.ready ? c.json({ ready: true }, 200) : c.json({ ready: false, reason: answer.reason ?? "not ready" }, 503);
}
