/**
 * Cloudflare's subrequest limit, counted by the Worker itself. Every fetch to Chroma and
 * every R2 binding call of one request counts (Cloudflare: 50 per request on the free
 * plan, 10,000 on the paid one, `limits.subrequests` in wrangler.toml; workerd does not
 * enforce it locally). Past the limit Cloudflare fails every further call, so the lock's
 * release fails too and the next backups answer 409 until its lease expires. Counting
 * here stops the work `RESERVE` calls early with a 503 resource_limit that names the
 * limit, and leaves the reserve to the calls already in flight and the lock's release.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { ResourceLimitError } from "../lib/errors.js";
import type { R2BucketLike } from "../lib/storage/r2.js";

/** Cloudflare's default on the paid plan. */
export const DEFAULT_SUBREQUEST_LIMIT = 10_000;
/** Left for uploads and reads in flight when the budget trips (a few each) and the lock's release. */
export const RESERVE = 25;

export class SubrequestBudget {
  used = 0;
  private tripped = false;

  constructor(readonly limit: number) {}

  /** Counts one subrequest; throws once the work has used all but the reserve, and past the limit. */
  take(what: string): void {
    this.used++;
    if (this.used > this.limit || (!this.tripped && this.used > this.limit - RESERVE)) {
      this.tripped = true;
      throw new ResourceLimitError(
        `this request reached the Worker's subrequest limit (${this.limit} per request, SUBREQUEST_LIMIT; at ${what}) and stopped: a backup commits nothing, a prune goes on when run again. ` +
          "Back up fewer or smaller collections per request (\"collections\": [...]), raise `limits.subrequests` in wrangler.toml and SUBREQUEST_LIMIT with it " +
          "(Cloudflare: 50 per request on the free plan, 10,000 by default on the paid one), or back up from Node (STORAGE=s3 at R2's S3 endpoint), which has no such limit",
        { limit: "subrequests", subrequests: this.limit },
      );
    }
  }
}

const current = new AsyncLocalStorage<SubrequestBudget>();

/** Runs one request (fetch or scheduled) with its own budget: every counted call inside it takes from it. */
export function withSubrequestBudget<T>(limit: number, run: () => T): T {
  return current.run(new SubrequestBudget(limit), run);
}

function take(what: string): void {
  current.getStore()?.take(what);
}

/** `fetch` for the Chroma client, counted. */
export const countedFetch: typeof fetch = async (input, init) => {
  take("a request to Chroma");
  return fetch(input, init);
};

/** The R2 binding with every call counted. */
export function countedBucket(bucket: R2BucketLike): R2BucketLike {
  return {
    head: async (key) => (take(`R2 head ${key}`), bucket.head(key)),
    get: async (key) => (take(`R2 get ${key}`), bucket.get(key)),
    put: async (key, value, options) => (take(`R2 put ${key}`), bucket.put(key, value, options)),
    delete: async (key) => (take(`R2 delete ${key}`), bucket.delete(key)),
    list: async (options) => (take(`R2 list ${options.prefix ?? ""}`), bucket.list(options)),
  };
}

/** SUBREQUEST_LIMIT: a positive integer, else Cloudflare's paid default. */
export function subrequestLimit(value: unknown): number {
  if (value === undefined || value === "") return DEFAULT_SUBREQUEST_LIMIT;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= RESERVE) throw new Error(`SUBREQUEST_LIMIT must be an integer above ${RESERVE} (your plan's subrequests per request), got ${JSON.stringify(value)}`);
  return n;
}
