import { env } from "cloudflare:workers";
import { expect, inject, it } from "vitest";
import worker, { type WorkerEnv } from "../../runtime/worker.js";
import { collectionId, describeCollection, dumpCollection } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";
import { DOCS, REAL } from "./dataset.js";

// Issue 14: under workerd, a restore of real text used to answer 422 snapshot_corrupt
// ("text section does not inflate: Memory limit exceeded", node:zlib under nodejs_compat).
// Here the Worker backs up 20,000 records of real text and the tricky DOCS into the
// emulated R2 bucket, verifies, restores both under other names, and every record
// comes back equal (embeddings bit-exact; within Chroma's drift for the cosine one).

const chromaUrl = inject("chromaUrl");
const TOKEN = "workers-real-data-token";
const workerEnv: WorkerEnv = { ...env, CHROMA_URL: chromaUrl, BACKUP_API_TOKEN: TOKEN, STORAGE_PREFIX: "wk-real/" };

function call(method: string, path: string, body?: unknown): Promise<Response> {
  const headers = new Headers({ authorization: `Bearer ${TOKEN}` });
  if (body !== undefined) headers.set("content-type", "application/json");
  return worker.fetch(new Request(`http://worker${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }), workerEnv);
}

async function dump(name: string) {
  const described = await describeCollection(chromaUrl, name);
  expect(described, name).not.toBeNull();
  return parseDump(await dumpCollection(chromaUrl, described!.id));
}

it(`backs up ${REAL.count} records of real text with the tricky ones, verifies, restores both: every record equal`, async () => {
  const created = await call("POST", "/backups", { collections: [REAL.name, DOCS.name], tag: "real-text" });
  const summary = (await created.json()) as { id: string; records: number; bytes: number };
  expect(created.status, JSON.stringify(summary)).toBe(201);
  expect(summary.records).toBe(REAL.count + DOCS.count);

  const verified = await call("POST", `/backups/${summary.id}/verify`);
  expect(await verified.json()).toMatchObject({ ok: true, records: REAL.count + DOCS.count, errors: [] });
  expect(verified.status).toBe(200);

  const rename = { [REAL.name]: `${REAL.name}-copy`, [DOCS.name]: `${DOCS.name}-real-copy` };
  const restored = await call("POST", "/restore", { snapshot: summary.id, collections: [REAL.name, DOCS.name], rename });
  const answer = await restored.json();
  expect(restored.status, JSON.stringify(answer)).toBe(200);
  expect(answer).toMatchObject({ restored: true, snapshot: summary.id });

  for (const [name, copy] of Object.entries(rename)) {
    const before = await dump(name);
    const after = await dump(copy);
    expect(before.size).toBe(name === REAL.name ? REAL.count : DOCS.count);
    expectSameRecords(before, after, name === REAL.name);
    expect((await describeCollection(chromaUrl, copy))!.id).not.toBe(await collectionId(chromaUrl, name));
  }
}, 180_000);
