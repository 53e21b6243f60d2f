import { stream } from "hono/streaming";
import type { ProgressEvent } from "../lib/snapshot/progress.js";
import type { AppContext } from "./context.js";
import { errorBody, toApiError } from "./errors.js";

export function wantsNdjson(c: AppContext): boolean {
  return /application\/x-ndjson/i.test(c.req.header("accept") ?? "");
}

/**
 * Runs a long operation, either as one JSON answer or, when the caller asked for
 * `application/x-ndjson`, as a stream of progress lines closed by a `done` or `error`
 * line. Progress lines are written at most every 200 ms.
 */
export async function runWithProgress<T extends object>(
  c: AppContext,
  run: (onProgress: (e: ProgressEvent) => void) => Promise<T>,
  respond: (result: T) => { body: object; status: 200 | 201 },
): Promise<Response> {
  if (!wantsNdjson(c)) {
    const { body, status } = respond(await run(() => {}));
    return c.json(body, status);
  }
  c.header("Content-Type", "application/x-ndjson; charset=utf-8");
  c.header("Cache-Control", "no-store");
  const { log } = c.get("deps");
  return stream(c, async (out) => {
    let last = 0;
    const write = (obj: object) => out.write(JSON.stringify(obj) + "\n");
    try {
      const result = await run((e) => {
        const now = Date.now();
        if (now - last < 200 && e.records < e.totalRecords) return;
        last = now;
        void write({ event: "progress", ...e });
      });
      await write({ event: "done", ...respond(result).body });
    } catch (err) {
      const e = toApiError(err);
      if (e.status >= 500) log("error", "operation failed", { requestId: c.get("requestId"), operation: c.get("operation"), error: (err as Error).message });
      await write({ event: "error", status: e.status, ...errorBody(e) });
    }
  });
}
