import { StorageError } from "./errors.js";

export interface RetryOptions {
  /** Total tries, the first included. */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

const NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "UND_ERR_SOCKET"]);

/** A failure worth another try: a retryable StorageError, or a dropped connection. */
export function isTransient(err: unknown): boolean {
  if (err instanceof StorageError) return err.retryable;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code ?? (err.cause as { code?: unknown } | undefined)?.code;
  if (typeof code === "string" && NETWORK_CODES.has(code)) return true;
  return err instanceof TypeError && /fetch failed|network/i.test(err.message);
}

/**
 * Runs `fn` until it succeeds, a non-transient error occurs, or the tries run out, with
 * exponential backoff and full jitter between tries. Only wrap calls that are safe to
 * repeat (a stream body can be consumed once, so it is never retried).
 */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 5;
  const base = options.baseDelayMs ?? 100;
  const max = options.maxDelayMs ?? 4000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !isTransient(err)) throw err;
      const delay = Math.random() * Math.min(max, base * 2 ** (attempt - 1));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/**
 * The engine's own retries, around the idempotent storage calls of a backup, restore,
 * verify or lock (reads, lists, deletes, and puts of content-addressed or fully buffered
 * objects; never `putIfAbsent`, whose answer a retry cannot trust). They come on top of
 * a driver's retries: fs and memory have none, and a cloud driver that gave up still
 * leaves a few seconds of outage that need not throw away a long backup's work.
 */
export const ENGINE_RETRY: RetryOptions = { attempts: 3, baseDelayMs: 200, maxDelayMs: 2000 };

export function retryStorage<T>(fn: () => Promise<T>): Promise<T> {
  return withRetry(fn, ENGINE_RETRY);
}
