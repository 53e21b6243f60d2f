import { ChromaRest, type ChromaConfig } from "../lib/chroma/rest.js";
import type { BackupService } from "../lib/service.js";

export interface Readiness {
  ready: boolean;
  reason?: string;
}

/** How long `/ready` waits for Chroma's heartbeat. */
const READY_PROBE_TIMEOUT_MS = 2000;

/**
 * What `GET /ready` answers: not ready while the startup restore has not finished (running,
 * or failed and retrying), while the runtime reports a reason of its own (`notReady`, e.g.
 * the supervised Chroma restarting), or while Chroma's heartbeat does not answer quickly.
 */
export function readinessProbe(service: BackupService, chroma: ChromaConfig, notReady?: () => string | null): () => Promise<Readiness> {
  const probe = new ChromaRest({ ...chroma, timeoutMs: READY_PROBE_TIMEOUT_MS });
  return async () => {
    const { state, lastError: detail } = service.startupRestore;
    if (state === "running") return { ready: false, reason: "startup restore running" };
    if (state === "failed") return { ready: false, reason: `startup restore failed, retrying${detail ? `: ${detail}` : ""}` };
    const own = notReady?.();
    if (own) return { ready: false, reason: own };
    try {
      await probe.heartbeat();
      return { ready: true };
    } catch (err) {
      return { ready: false, reason: `Chroma down: ${(err as Error).message}` };
    }
  };
}
