/**
 * Bounded concurrency, the one helper for the whole repo: a fixed list of jobs
 * (forEachLimited), results in order with a few started ahead (mapAhead), and background
 * tasks behind a limit (TaskPool). Each keeps memory bounded by its width.
 */

/** Runs `fn` over `items` with at most `width` at once; the first failure rejects (the others still run to their end). */
export async function forEachLimited<T>(items: readonly T[], width: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(Math.max(1, width), items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

/**
 * Yields `fn(item)` for each item of `source`, in order, with up to `depth` calls in
 * flight: the next items are fetched while the consumer works on this one. Items are
 * pulled from `source` one at a time (a generator is never re-entered). With `signal`,
 * waiting stops as soon as it aborts (calls in flight go on in the background).
 */
export async function* mapAhead<T, U>(source: AsyncIterable<T> | Iterable<T>, depth: number, fn: (item: T) => Promise<U>, signal?: AbortSignal): AsyncGenerator<U> {
  const it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : (source as Iterable<T>)[Symbol.iterator]();
  let pulling: Promise<unknown> = Promise.resolve();
  let ended = false;
  const queue: Promise<{ done: true } | { done: false; value: U }>[] = [];
  const start = () => {
    const pulled = pulling.then(() => (ended ? ({ done: true } as const) : it.next()));
    pulling = pulled.catch(() => {});
    const result = pulled.then(async (r) => {
      if (r.done) {
        ended = true;
        return { done: true } as const;
      }
      return { done: false, value: await fn(r.value) } as const;
    });
    result.catch(() => {}); // surfaces when awaited
    queue.push(result);
  };
  try {
    for (let i = 0; i < Math.max(1, depth); i++) start();
    for (;;) {
      const r = await untilAborted(queue.shift()!, signal);
      if (r.done) return;
      start();
      yield r.value;
    }
  } finally {
    if (!ended) void Promise.resolve(it.return?.()).catch(() => {});
  }
}

/**
 * Background tasks, at most `width` at once. `room()` waits for a free slot; `run()`
 * starts a task and answers its result (a failure is also kept, and thrown by the next
 * `room()` and by `drain()`, so a caller that does not await a result still sees it).
 */
export class TaskPool {
  private readonly running = new Set<Promise<unknown>>();
  private failure: { error: unknown } | null = null;

  constructor(
    private readonly width: number,
    private readonly signal?: AbortSignal,
  ) {}

  /** Resolves once fewer than `width` tasks run; throws the first failure of a task, or the signal's reason. */
  async room(): Promise<void> {
    while (this.running.size >= Math.max(1, this.width)) await untilAborted(Promise.race(this.running), this.signal);
    this.check();
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = task();
    const tracked = result.then(
      () => {},
      (error: unknown) => {
        this.failure ??= { error };
      },
    );
    const settled = tracked.finally(() => this.running.delete(settled));
    this.running.add(settled);
    result.catch(() => {}); // kept in `failure`; awaiting `result` is optional
    return result;
  }

  /** Waits for every task; throws the first failure, or the signal's reason. */
  async drain(): Promise<void> {
    await untilAborted(Promise.all(this.running), this.signal);
    this.check();
  }

  private check(): void {
    this.signal?.throwIfAborted();
    if (this.failure) throw this.failure.error;
  }
}

/**
 * Waits for `promise`, or rejects with the signal's reason as soon as it aborts: an
 * abandoned job does not wait for a hung request to time out (the request goes on in the
 * background, and nothing it yields is used).
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err as Error);
      },
    );
  });
}
