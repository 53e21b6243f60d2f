import type { Logger } from "../log.js";
import { StorageError, type StorageOperation } from "./errors.js";
import type { ObjectInfo, ObjectStat, Storage } from "./types.js";

/**
 * The one retry layer, as a decorator over a store (restic's retry.Backend is the model):
 * drivers make one attempt per call and say whether a failure is worth another
 * (`StorageError.retryable`); this layer gives every call a timeout, retries what is safe
 * to repeat, bounded in attempts AND in total time, and logs each retry.
 *
 * - put, get (opening, and resuming a read that broke), head, list, delete: retried with
 *   exponential backoff and full jitter.
 * - putIfAbsent: one attempt (a conditional write's lost answer cannot be retried
 *   blindly: the caller reads back).
 * - Timeouts: a call that makes no progress for `timeoutMs` fails as a retryable
 *   `unavailable` StorageError ("s3: put chunks/ab/… did not answer within 60s"). Uploads
 *   get more time for their bytes (at `minBytesPerSecond`); a get's body is timed out
 *   only when it stalls.
 */
export interface RetryingOptions {
  /** Total tries, the first included; default 5. */
  attempts?: number;
  /** No new try starts once this much time has passed since the first; default 2 × timeoutMs. */
  maxElapsedMs?: number;
  /** STORAGE_TIMEOUT: a call (or a stream) without progress for this long fails; default 60 s. */
  timeoutMs?: number;
  /** Uploads are given `size / minBytesPerSecond` on top of `timeoutMs`; default 256 KiB/s. */
  minBytesPerSecond?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  log?: Logger;
}

const NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "UND_ERR_SOCKET"]);
/** A read that delivered more than this is not resumed (the delivered bytes are kept to check the re-read against). */
const MAX_RESUME_BYTES = 64 * 1024 * 1024;

/** A failure worth another try: a retryable StorageError, or a dropped connection. */
export function isTransient(err: unknown): boolean {
  if (err instanceof StorageError) return err.retryable;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code ?? (err.cause as { code?: unknown } | undefined)?.code;
  if (typeof code === "string" && NETWORK_CODES.has(code)) return true;
  return err instanceof TypeError && /fetch failed|network/i.test(err.message);
}

/** `60s`, `2s`, `1.5s`, `250ms`: how long a caller waited, for messages. */
export function formatWait(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)}s`;
}

/** The error of a call that did not answer in time: retryable, kind `unavailable`. */
export function timeoutError(driver: string, operation: StorageOperation, key: string, waitedMs: number, step?: string): StorageError {
  return new StorageError(`${driver}: ${operation} ${key}${step ? ` (${step})` : ""} did not answer within ${formatWait(waitedMs)}`, {
    driver,
    operation,
    key,
    kind: "unavailable",
    retryable: true,
  });
}

/**
 * A deadline. `race` settles with the promise, or rejects with `onTimeout()` once the
 * deadline passes first.
 */
class Deadline {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private reject: ((err: unknown) => void) | null = null;
  private at = 0;
  private allowedMs = 0;

  constructor(private readonly onTimeout: (waitedMs: number) => unknown) {}

  /** Restarts the clock: the deadline is `ms` from now. */
  reset(ms: number): void {
    this.at = Date.now() + ms;
    this.allowedMs = ms;
    this.arm();
  }

  private arm(): void {
    clearTimeout(this.timer);
    if (!this.reject) return;
    this.timer = setTimeout(() => this.fire(), Math.max(0, this.at - Date.now()));
  }

  private fire(): void {
    const reject = this.reject;
    this.reject = null;
    reject?.(this.onTimeout(this.allowedMs));
  }

  race<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.reject = reject;
      this.arm();
      promise.then(
        (value) => {
          this.clear();
          resolve(value);
        },
        (err: unknown) => {
          this.clear();
          reject(err);
        },
      );
    });
  }

  clear(): void {
    clearTimeout(this.timer);
    this.reject = null;
  }
}

/** How long to wait before try `attempt + 1` (full jitter). */
function backoff(attempt: number, base: number, max: number): number {
  return Math.random() * Math.min(max, base * 2 ** (attempt - 1));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function retryingStorage(storage: Storage, options: RetryingOptions = {}): Storage {
  const driver = storage.driver;
  const attempts = Math.max(1, options.attempts ?? 5);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const maxElapsedMs = options.maxElapsedMs ?? 2 * timeoutMs;
  const rate = options.minBytesPerSecond ?? 256 * 1024;
  const base = options.baseDelayMs ?? 100;
  const maxDelay = options.maxDelayMs ?? 4000;
  const log = options.log;
  const bytesAllowance = (bytes: number) => (bytes / rate) * 1000;

  /** A budget of tries: `next(err)` says whether (and after how long) to try again. */
  const budget = (operation: StorageOperation, key: string) => {
    let started = Date.now();
    let attempt = 1;
    return {
      get attempt() {
        return attempt;
      },
      /** Progress was made: a later stall gets the whole budget again. */
      restart() {
        started = Date.now();
        attempt = 1;
      },
      /** Waits before the next try; throws the final error when none is left. */
      async next(err: unknown): Promise<void> {
        const elapsed = Date.now() - started;
        const delay = backoff(attempt, base, maxDelay);
        if (!isTransient(err) || attempt >= attempts || elapsed + delay >= maxElapsedMs) throw giveUp(err, attempt, elapsed);
        log?.("warn", "storage call failed; retrying", { driver, operation, key, attempt, error: (err as Error).message, retryInMs: Math.round(delay) });
        await sleep(delay);
        attempt++;
      },
    };
  };

  /** The error the caller sees: the last one, saying how many tries it took when there were several. */
  const giveUp = (err: unknown, tries: number, elapsedMs: number): unknown => {
    if (!(err instanceof StorageError) || tries === 1 || !err.retryable) return err;
    return new StorageError(`${err.message} (gave up after ${tries} tries in ${formatWait(elapsedMs)})`, {
      driver: err.driver,
      operation: err.operation,
      key: err.key,
      kind: err.kind,
      status: err.status,
      retryable: false,
      cause: err,
    });
  };

  /** Runs a repeatable call, each try with a deadline of `ms`. */
  async function retried<T>(operation: StorageOperation, key: string, ms: number, call: () => Promise<T>): Promise<T> {
    const tries = budget(operation, key);
    for (;;) {
      const deadline = new Deadline((waited) => timeoutError(driver, operation, key, waited));
      deadline.reset(ms);
      try {
        return await deadline.race(call());
      } catch (err) {
        await tries.next(err);
      }
    }
  }

  /**
   * A get's body, watched: a read that stalls for `timeoutMs` fails as a timeout, and a
   * body that breaks with a retryable error is read again from the start, checked against
   * what was already delivered, and continued (the object must not have changed).
   */
  function watchedBody(key: string, first: ReadableStream<Uint8Array>, tries: ReturnType<typeof budget>): ReadableStream<Uint8Array> {
    let reader = first.getReader();
    const delivered: Uint8Array[] = [];
    let deliveredBytes = 0;
    const read = () => {
      const deadline = new Deadline((waited) => timeoutError(driver, "get", key, waited));
      deadline.reset(timeoutMs);
      return deadline.race(reader.read());
    };
    /** Opens the object again and reads past the bytes already delivered, checking them. */
    const resume = async () => {
      void reader.cancel().catch(() => {});
      const deadline = new Deadline((waited) => timeoutError(driver, "get", key, waited));
      deadline.reset(timeoutMs);
      reader = (await deadline.race(storage.get(key))).getReader(); // one try: a failure here uses up the same budget
      let offset = 0;
      let part = 0;
      let within = 0;
      while (offset < deliveredBytes) {
        const { done, value } = await read();
        if (done) throw changed();
        let i = 0;
        while (i < value.byteLength && offset < deliveredBytes) {
          const held = delivered[part]!;
          const n = Math.min(value.byteLength - i, held.byteLength - within);
          for (let k = 0; k < n; k++) if (value[i + k] !== held[within + k]) throw changed();
          i += n;
          within += n;
          offset += n;
          if (within === held.byteLength) {
            part++;
            within = 0;
          }
        }
        if (i < value.byteLength) return value.subarray(i); // the first new bytes
      }
      return null;
    };
    // Retryable: a read garbled on the way differs too, and the next one may match.
    const changed = () =>
      new StorageError(`${driver}: get ${key} failed: read again after a broken read, the object's first ${deliveredBytes} bytes differ`, {
        driver,
        operation: "get",
        key,
        kind: "unavailable",
        retryable: true,
      });
    let broken: unknown = null;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        for (;;) {
          let chunk: Uint8Array | null;
          try {
            if (broken !== null) {
              if (deliveredBytes > MAX_RESUME_BYTES) throw broken;
              await tries.next(broken);
              broken = null;
              chunk = await resume();
              if (chunk === null) continue;
            } else {
              const { done, value } = await read();
              if (done) return controller.close();
              chunk = value;
            }
          } catch (err) {
            if (tries.attempt >= attempts || !isTransient(err) || err === broken) throw err;
            broken = err;
            continue;
          }
          tries.restart();
          if (deliveredBytes + chunk.byteLength <= MAX_RESUME_BYTES) delivered.push(chunk);
          deliveredBytes += chunk.byteLength;
          controller.enqueue(chunk);
          return;
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
  }

  return {
    driver,
    capabilities: storage.capabilities,

    async put(key, bytes) {
      await retried("put", key, timeoutMs + bytesAllowance(bytes.byteLength), () => storage.put(key, bytes));
    },

    putIfAbsent(key, bytes) {
      const deadline = new Deadline((waited) => timeoutError(driver, "putIfAbsent", key, waited));
      deadline.reset(timeoutMs + bytesAllowance(bytes.byteLength));
      return deadline.race(storage.putIfAbsent(key, bytes));
    },

    async get(key) {
      const tries = budget("get", key);
      for (;;) {
        const deadline = new Deadline((waited) => timeoutError(driver, "get", key, waited));
        deadline.reset(timeoutMs);
        try {
          return watchedBody(key, await deadline.race(storage.get(key)), tries);
        } catch (err) {
          await tries.next(err);
        }
      }
    },

    head(key): Promise<ObjectStat> {
      return retried("head", key, timeoutMs, () => storage.head(key));
    },

    /** A listing that breaks is listed again, and the keys already yielded are skipped (restic's List). */
    async *list(prefix): AsyncIterable<ObjectInfo> {
      const seen = new Set<string>();
      const tries = budget("list", prefix);
      for (;;) {
        const iterator = storage.list(prefix)[Symbol.asyncIterator]();
        let finished = false;
        try {
          for (;;) {
            const deadline = new Deadline((waited) => timeoutError(driver, "list", prefix, waited));
            deadline.reset(timeoutMs);
            const { done, value } = await deadline.race(iterator.next());
            if (done) {
              finished = true;
              return;
            }
            if (seen.has(value.key)) continue;
            seen.add(value.key);
            tries.restart(); // a new key: progress
            yield value;
          }
        } catch (err) {
          finished = true;
          void iterator.return?.()?.catch(() => {});
          await tries.next(err);
        } finally {
          // The caller stopped early: close the driver's listing too.
          if (!finished) void iterator.return?.()?.catch(() => {});
        }
      }
    },

    delete(key) {
      return retried("delete", key, timeoutMs, () => storage.delete(key));
    },
  };
}
