import { env } from "cloudflare:workers";
import { expect, inject, it } from "vitest";
import worker, { type WorkerEnv } from "../../runtime/worker.js";
import { DOCS, REAL } from "./dataset.js";

// Issue 14: a Worker's backup must end in an answer, not be cut off by Cloudflare. Past
// its subrequest limit every further fetch and R2 call fails, the lock's release with
// them. workerd does not enforce the limit, so the Worker counts its own
// (runtime/worker-subrequests.ts): here, lowered to 40 (work stops at 15), the backup of REAL (20,000
// records read 500 at a time: 40 reads from Chroma alone) stops early with a 503 that
// names the limit, and the lock is released (the next backup is not refused with 409).

const chromaUrl = inject("chromaUrl");
const TOKEN = "workers-subrequests-token";
const base: WorkerEnv = { ...env, CHROMA_URL: chromaUrl, BACKUP_API_TOKEN: TOKEN, STORAGE_PREFIX: "wk-subrequests/" };

function backup(workerEnv: WorkerEnv, collections: string[]): Promise<Response> {
  const headers = new Headers({ authorization: `Bearer ${TOKEN}`, "content-type": "application/json" });
  return worker.fetch(new Request("http://worker/backups", { method: "POST", headers, body: JSON.stringify({ collections }) }), workerEnv);
}

it("a backup that would pass the subrequest limit answers 503 resource_limit naming it, commits nothing and releases the lock", async () => {
  // One bucket and one store for both envs: the lock the first backup took is the one the second needs.
  const limited = await backup({ ...base, SUBREQUEST_LIMIT: "40" }, [REAL.name]);
  const answer = (await limited.json()) as { error: { code: string; message: string; details: unknown } };
  expect(limited.status, JSON.stringify(answer)).toBe(503);
  expect(answer.error.code).toBe("resource_limit");
  expect(answer.error.message).toMatch(/subrequest limit \(40 per request, SUBREQUEST_LIMIT/);
  expect(answer.error.message).toMatch(/limits\.subrequests/);
  expect(answer.error.details).toEqual({ limit: "subrequests", subrequests: 40 });

  const listed = await worker.fetch(new Request("http://worker/backups", { headers: { authorization: `Bearer ${TOKEN}` } }), base);
  expect(((await listed.json()) as { snapshots: unknown[] }).snapshots).toEqual([]);

  const next = await backup(base, [DOCS.name]);
  const summary = (await next.json()) as { records: number };
  expect(next.status, JSON.stringify(summary)).toBe(201);
  expect(summary.records).toBe(DOCS.count);
});

it("refuses a SUBREQUEST_LIMIT that is not a number of subrequests: 500 misconfigured", async () => {
  const res = await backup({ ...base, SUBREQUEST_LIMIT: "lots" }, [DOCS.name]);
  expect(res.status).toBe(500);
  expect(await res.json()).toMatchObject({ error: { code: "misconfigured", message: expect.stringMatching(/SUBREQUEST_LIMIT/) } });
});
