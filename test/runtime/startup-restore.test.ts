import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { LogFields, LogLevel } from "../../lib/log.js";
import { chunkKey } from "../../lib/snapshot/chunk.js";
import { manifestKey } from "../../lib/snapshot/manifest.js";
import { runStartupRestore } from "../../runtime/startup-restore.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { collectionId, listCollectionNames } from "../fixtures/dataset.js";
import { client, makeApp, makeService, makeStore, resetChroma, TOKEN } from "../handlers/harness.js";

let chroma: TestChroma;
beforeAll(async () => {
  chroma = await startTestChroma();
});
afterAll(async () => {
  await chroma?.close();
});

it("startup restores the newest snapshot that verifies, and says loudly which newer ones it skipped and why", async () => {
  const store = await makeStore("fs");
  try {
    const service = makeService({ chromaUrl: chroma.url, storage: store.storage });
    const app = makeApp(service);
    const api = client(app);
    await resetChroma(chroma.url, [{ name: "kept", count: 120, dim: 8, seed: 1 }]);
    const good = (await api.post("/backups")).body;
    await resetChroma(chroma.url, [{ name: "kept", count: 150, dim: 8, seed: 2 }]);
    const corrupt = (await api.post("/backups")).body;
    await resetChroma(chroma.url, [{ name: "kept", count: 90, dim: 8, seed: 3 }]);
    const tampered = (await api.post("/backups")).body;

    // The newest manifest is altered (its checksum no longer matches); the middle one has a damaged chunk.
    const manifestPath = join(store.root!, ...manifestKey(tampered.id).split("/"));
    await writeFile(manifestPath, (await readFile(manifestPath, "utf8")).replace('"records":90', '"records":91'));
    const victim = (await service.get(corrupt.id)).collections[0]!.chunks[0]!.hash;
    const chunkPath = join(store.root!, ...chunkKey(victim).split("/"));
    const bytes = await readFile(chunkPath);
    bytes[40]! ^= 0xff;
    await writeFile(chunkPath, bytes);

    for (const name of await listCollectionNames(chroma.url)) await service.chroma.deleteCollection(name);
    const lines: { level: LogLevel; message: string; fields?: LogFields }[] = [];
    const result = (await runStartupRestore(app, TOKEN, "if-empty", (level, message, fields) => lines.push({ level, message, fields }))) as Record<string, unknown>;

    expect(result).toMatchObject({ restored: true, snapshot: good.id });
    expect((result.skipped as { id: string }[]).map((s) => s.id).sort()).toEqual([corrupt.id, tampered.id].sort());
    expect(await service.chroma.count(await collectionId(chroma.url, "kept"))).toBe(120);
    const loud = lines.filter((l) => l.level === "error" && /STARTUP RESTORE SKIPPED A DAMAGED SNAPSHOT/.test(l.message));
    expect(loud.map((l) => l.fields!.snapshot).sort()).toEqual([corrupt.id, tampered.id].sort());
    expect(loud.find((l) => l.fields!.snapshot === corrupt.id)!.fields!.reason).toContain(victim);
    expect(loud.find((l) => l.fields!.snapshot === tampered.id)!.fields!.reason).toMatch(/checksum/);
  } finally {
    await store.cleanup();
  }
}, 120_000);
