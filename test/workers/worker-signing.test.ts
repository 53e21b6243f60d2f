import { env } from "cloudflare:workers";
import { describe, expect, inject, it } from "vitest";
import worker, { type WorkerEnv } from "../../runtime/worker.js";
import { signingKeyId } from "../../lib/snapshot/signing.js";
import { listCollectionNames } from "../fixtures/dataset.js";
import { DOCS } from "./dataset.js";

// SNAPSHOT_SIGNING_KEY as a Worker secret: runtime/worker.ts under workerd (node:crypto's
// HMAC through nodejs_compat) signs the manifests it writes into R2 and refuses ones it
// cannot vouch for.

const chromaUrl = inject("chromaUrl");
const TOKEN = "workers-test-token";
const PREFIX = "wk-sign/";
const KEY = "worker-signing-key-0123456789abcdef01234567";
const base: WorkerEnv = { ...env, CHROMA_URL: chromaUrl, BACKUP_API_TOKEN: TOKEN, STORAGE_PREFIX: PREFIX };
const keyed: WorkerEnv = { ...base, SNAPSHOT_SIGNING_KEY: KEY };

function call(workerEnv: WorkerEnv, method: string, path: string, body?: unknown): Promise<Response> {
  const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  return worker.fetch(new Request(`http://worker${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }), workerEnv);
}

describe("runtime/worker.ts with SNAPSHOT_SIGNING_KEY", () => {
  it("signs what it writes, verifies it, and refuses a manifest that is unsigned or signed with another key", async () => {
    const created = await call(keyed, "POST", "/backups", { collections: [DOCS.name] });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const object = await env.BACKUP_BUCKET.get(`${PREFIX}snapshots/${id}.json`);
    const stored = await object!.text();
    expect(stored).toMatch(new RegExp(`^\\{"checksum":"sha256:[0-9a-f]{64}","signature":"hmac-sha256:${signingKeyId(KEY)}:[0-9a-f]{64}","manifest":\\{`));
    expect(await (await call(keyed, "POST", `/backups/${id}/verify`)).json()).toMatchObject({ ok: true, records: DOCS.count });
    expect(await (await call(keyed, "GET", "/status")).json()).toMatchObject({ storage: { signingKeyIds: [signingKeyId(KEY)] } });

    // The same store read by a deployment with another key.
    const other = { ...base, SNAPSHOT_SIGNING_KEY: "another-worker-key-0123456789abcdef0123456" };
    const foreign = await call(other, "GET", `/backups/${id}`);
    expect(foreign.status).toBe(422);
    expect(await foreign.json()).toMatchObject({ error: { code: "snapshot_corrupt", message: expect.stringMatching(new RegExp(`signed with key ${signingKeyId(KEY)}, this service has ${signingKeyId(other.SNAPSHOT_SIGNING_KEY)}`)) } });

    // The signature stripped (the checksum still matches): refused, and nothing reaches Chroma.
    await env.BACKUP_BUCKET.put(`${PREFIX}snapshots/${id}.json`, stored.replace(/,"signature":"[^"]+"/, ""));
    const restore = await call(keyed, "POST", "/restore", { snapshot: id, collections: [DOCS.name], rename: { [DOCS.name]: `${DOCS.name}-forged` } });
    expect(restore.status).toBe(422);
    expect(await restore.json()).toMatchObject({ error: { code: "snapshot_corrupt", message: expect.stringMatching(/not signed/) } });
    expect(await listCollectionNames(chromaUrl)).not.toContain(`${DOCS.name}-forged`);
    // Without the key the Worker still reads it (checksummed, not signed).
    expect((await call(base, "GET", `/backups/${id}`)).status).toBe(200);
  });

  it("a short key is a misconfiguration that names the variable", async () => {
    const res = await call({ ...base, SNAPSHOT_SIGNING_KEY: "short" }, "GET", "/backups");
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ error: { code: "misconfigured", message: expect.stringMatching(/SNAPSHOT_SIGNING_KEY must be at least 32 characters/) } });
  });
});
