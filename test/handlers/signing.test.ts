/**
 * SNAPSHOT_SIGNING_KEY through the runtime: the Node server (runtime/node.ts) built from
 * an environment with and without the key, and the startup restore and prune of a keyed
 * service over a store that also holds unsigned manifests. A real Chroma; the memory and
 * fs drivers.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startService } from "../../runtime/node.js";
import { runStartupRestore } from "../../runtime/startup-restore.js";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { manifestKey } from "../../lib/snapshot/manifest.js";
import { signingKeyId } from "../../lib/snapshot/signing.js";
import { readAll } from "../../lib/storage/streams.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { collectionId, listCollectionNames } from "../fixtures/dataset.js";
import { client, makeApp, makeService, makeStore, resetChroma, TOKEN } from "./harness.js";

const NEW = "new-signing-key-0123456789abcdef0123456789";
const OLD = "old-signing-key-0123456789abcdef0123456789";

let chroma: TestChroma;
let dataDir: string;
beforeAll(async () => {
  chroma = await startTestChroma();
  dataDir = await mkdtemp(join(tmpdir(), "signing-"));
  await resetChroma(chroma.url, [{ name: "signed", count: 80, dim: 8, seed: 5 }]);
}, 120_000);
afterAll(async () => {
  await chroma?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

interface Line {
  level: LogLevel;
  message: string;
  fields?: LogFields;
}

function serverEnv(extra: Record<string, string>): Record<string, string> {
  return { CHROMA_URL: chroma.url, STORAGE: "memory", PORT: "0", HOST: "127.0.0.1", BACKUP_API_TOKEN: TOKEN, RESTORE_ON_START: "never", DATA_DIR: dataDir, ...extra };
}

describe("the Node server, from its environment", () => {
  it("with SNAPSHOT_SIGNING_KEY: says so at startup, and every manifest it writes is signed with the first key", async () => {
    const lines: Line[] = [];
    const running = await startService(serverEnv({ SNAPSHOT_SIGNING_KEY: `${NEW}, ${OLD}` }), (level, message, fields) => lines.push({ level, message, fields }));
    try {
      expect(lines.filter((l) => /SNAPSHOT_SIGNING_KEY/.test(l.message))).toEqual([
        { level: "info", message: "snapshot manifests are signed (SNAPSHOT_SIGNING_KEY)", fields: { signingKey: signingKeyId(NEW), verifyingKeys: [signingKeyId(NEW), signingKeyId(OLD)] } },
      ]);
      const call = (method: string, path: string, body?: unknown) =>
        fetch(`${running.url}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
      const taken = await call("POST", "/backups", {});
      expect(taken.status).toBe(201);
      const { id } = (await taken.json()) as { id: string };
      const stored = new TextDecoder().decode(await readAll(await running.service.storage.get(manifestKey(id))));
      expect(stored).toMatch(new RegExp(`^\\{"checksum":"sha256:[0-9a-f]{64}","signature":"hmac-sha256:${signingKeyId(NEW)}:[0-9a-f]{64}","manifest":\\{`));
      expect(await (await call("POST", `/backups/${id}/verify`)).json()).toMatchObject({ ok: true, records: 80 });
      const status = (await (await call("GET", "/status")).json()) as { storage: { signingKeyIds: string[] } };
      expect(status.storage.signingKeyIds).toEqual([signingKeyId(NEW), signingKeyId(OLD)]);
    } finally {
      await running.stop();
    }
  });

  it("without it: warns once at startup, plainly, and writes unsigned manifests", async () => {
    const lines: Line[] = [];
    const running = await startService(serverEnv({}), (level, message, fields) => lines.push({ level, message, fields }));
    try {
      const warned = lines.filter((l) => /SNAPSHOT_SIGNING_KEY/.test(l.message));
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: "warn", message: expect.stringMatching(/is not set: snapshot manifests are checksummed but not signed, so anyone with write access to the store could forge a snapshot/) });
      const outcome = await running.service.backup();
      expect(outcome.skipped).toBe(false);
      const id = outcome.skipped ? "" : outcome.snapshot.id;
      expect(new TextDecoder().decode(await readAll(await running.service.storage.get(manifestKey(id))))).toMatch(/^\{"checksum":"sha256:[0-9a-f]{64}","manifest":\{/);
      expect((await running.service.status()).storage.signingKeyIds).toEqual([]);
    } finally {
      await running.stop();
    }
  });

  it("a key shorter than 32 characters stops the start with the variable named", async () => {
    await expect(startService(serverEnv({ SNAPSHOT_SIGNING_KEY: "too-short" }), () => {})).rejects.toThrow(/SNAPSHOT_SIGNING_KEY must be at least 32 characters.*openssl rand -hex 32/);
  });
});

describe("a keyed service over a store that also holds unsigned manifests", () => {
  it("the startup restore skips a newer unsigned snapshot, loudly, and restores the newest signed one; prune does not sweep chunks while they exist", async () => {
    const store = await makeStore("fs");
    try {
      const unkeyed = client(makeApp(makeService({ chromaUrl: chroma.url, storage: store.storage })));
      const keyedService = makeService({ chromaUrl: chroma.url, storage: store.storage, signingKeys: [NEW] });
      const keyedApp = makeApp(keyedService);
      const keyed = client(keyedApp);
      await resetChroma(chroma.url, [{ name: "kept", count: 60, dim: 8, seed: 1 }]);
      const older = (await unkeyed.post("/backups")).body;
      await resetChroma(chroma.url, [{ name: "kept", count: 70, dim: 8, seed: 2 }]);
      const signed = (await keyed.post("/backups")).body;
      await resetChroma(chroma.url, [{ name: "kept", count: 90, dim: 8, seed: 3 }]);
      const newer = (await unkeyed.post("/backups")).body;
      expect([older.id < signed.id, signed.id < newer.id]).toEqual([true, true]);
      // The unsigned ones are invisible to the keyed service and reported as damaged.
      expect((await keyed.get("/backups")).body.snapshots.map((s: { id: string }) => s.id)).toEqual([signed.id]);
      const damaged = (await keyed.get("/status")).body.storage.damagedSnapshots as { id: string; error: string }[];
      expect(damaged.map((d) => d.id).sort()).toEqual([older.id, newer.id].sort());
      for (const d of damaged) expect(d.error).toMatch(/not signed/);

      for (const name of await listCollectionNames(chroma.url)) await keyedService.chroma.deleteCollection(name);
      const lines: Line[] = [];
      const result = (await runStartupRestore(keyedApp, TOKEN, "if-empty", (level, message, fields) => lines.push({ level, message, fields }))) as Record<string, unknown>;
      expect(result).toMatchObject({ restored: true, snapshot: signed.id, skipped: [{ id: newer.id, reason: expect.stringMatching(/not signed/) }] });
      expect(await keyedService.chroma.count(await collectionId(chroma.url, "kept"))).toBe(70);
      expect(lines.filter((l) => l.level === "error").map((l) => [l.message, l.fields!.snapshot])).toEqual([["STARTUP RESTORE SKIPPED A DAMAGED SNAPSHOT", newer.id]]);

      // A manifest the key cannot vouch for has an unknown chunk list to the keyed service: no sweep.
      const pruned = await keyed.post("/prune", { grace: 0, keepLast: 1 });
      expect(pruned.status, pruned.text).toBe(200);
      expect(pruned.body).toMatchObject({ kept: [signed.id], deleted: [], chunksDeleted: 0 });
      expect(pruned.body.warnings).toEqual([expect.stringMatching(/^chunk sweep skipped: 2 damaged manifest\(s\)/)]);
      expect((await unkeyed.post(`/backups/${older.id}/verify`)).body.ok).toBe(true);
    } finally {
      await store.cleanup();
    }
  });
});
