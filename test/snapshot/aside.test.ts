/**
 * Collections a replace restore builds aside: swept (logged, with counts) when a restore
 * died before its swap, never counted by /status nor backed up.
 */
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import type { LogFields, Logger, LogLevel } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { ASIDE_STALE_MS, asideCreatedAt, asideName, buildingAside, isAsideCollection, sweepAsideCollections } from "../../lib/snapshot/aside.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { restoreSnapshot } from "../../lib/snapshot/restore.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";

const L2 = '{"hnsw":{"space":"l2"}}';
let chroma: TestChroma;
let rest: ChromaRest;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
});
afterAll(async () => {
  await chroma?.close();
});
beforeEach(async () => {
  for (const name of await listCollectionNames(chroma.url)) await rest.deleteCollection(name);
});

function recordingLogger(): { log: Logger; lines: { level: LogLevel; message: string; fields: LogFields }[] } {
  const lines: { level: LogLevel; message: string; fields: LogFields }[] = [];
  return { log: (level, message, fields = {}) => lines.push({ level, message, fields }), lines };
}

async function collectionWith(name: string, records: number, seed: number): Promise<void> {
  const id = await createCollection(chroma.url, name, L2);
  if (records > 0) await addRecords(chroma.url, id, makeRecords(records, 4, seed));
}

it("names tell their creation time", () => {
  const at = Date.UTC(2026, 5, 1, 12);
  const name = asideName("notes", at);
  expect(isAsideCollection(name)).toBe(true);
  expect(asideCreatedAt(name)).toBe(at);
  expect(isAsideCollection("notes")).toBe(false);
  expect(asideCreatedAt("notes.restore-zz")).toBeNull();
  const long = asideName("x".repeat(512));
  expect(long.length).toBeLessThanOrEqual(512);
  expect(isAsideCollection(long)).toBe(true);
});

it("sweeps stale asides with their records, logged; keeps young ones of other targets and the ones being built", async () => {
  const old = asideName("notes", Date.now() - 2 * ASIDE_STALE_MS);
  const young = asideName("other", Date.now() - 1000);
  const ownTarget = asideName("mine", Date.now() - 1000);
  const inProgress = asideName("busy", Date.now() - 2 * ASIDE_STALE_MS);
  await collectionWith("notes", 5, 1);
  await collectionWith(old, 120, 2);
  await collectionWith(young, 3, 3);
  await collectionWith(ownTarget, 7, 4);
  await collectionWith(inProgress, 1, 5);

  const { log, lines } = recordingLogger();
  const swept = await buildingAside(inProgress, () => sweepAsideCollections(rest, log, { olderThanMs: ASIDE_STALE_MS, targets: ["mine"] }));
  expect(swept.sort((a, b) => a.name.localeCompare(b.name))).toEqual([
    { name: ownTarget, records: 7 },
    { name: old, records: 120 },
  ]);
  expect(await listCollectionNames(chroma.url)).toEqual([inProgress, "notes", young].sort());
  expect(lines).toHaveLength(1);
  expect(lines[0]!.level).toBe("warn");
  expect(lines[0]!.fields).toMatchObject({ records: 127, counts: { [old]: 120, [ownTarget]: 7 } });
  expect((lines[0]!.fields.collections as string[]).sort()).toEqual([old, ownTarget].sort());

  // At the start of the embedded Chroma (nothing else writes to it): every aside goes, whatever its age.
  const all = await sweepAsideCollections(rest, log);
  expect(all.map((s) => s.name).sort()).toEqual([inProgress, young].sort());
  expect(await listCollectionNames(chroma.url)).toEqual(["notes"]);
  expect(await sweepAsideCollections(rest, log)).toEqual([]);
  expect(lines).toHaveLength(2); // nothing swept, nothing logged
});

it("a replace restore sweeps the aside an interrupted restore of the same collection left, and stale ones of others", async () => {
  await collectionWith("notes", 40, 6);
  const storage = memoryStorage();
  const manifest = await takeSnapshot(rest, storage);
  const leftBySameTarget = asideName("notes", Date.now() - 1000);
  const staleOther = asideName("elsewhere", Date.now() - 2 * ASIDE_STALE_MS);
  const youngOther = asideName("elsewhere", Date.now() - 1000);
  for (const [name, seed] of [[leftBySameTarget, 7], [staleOther, 8], [youngOther, 9]] as const) await collectionWith(name, 10, seed);

  const { log, lines } = recordingLogger();
  await restoreSnapshot(rest, storage, manifest, { log });
  expect(await listCollectionNames(chroma.url)).toEqual(["notes", youngOther].sort());
  expect(await rest.count(await collectionId(chroma.url, "notes"))).toBe(40);
  expect(lines.filter((l) => l.level === "warn").flatMap((l) => l.fields.collections as string[]).sort()).toEqual([leftBySameTarget, staleOther].sort());
});

it("status and backups never count or keep aside collections", async () => {
  await collectionWith("notes", 25, 10);
  await collectionWith(asideName("notes"), 900, 11);
  const storage = memoryStorage();
  const service = new BackupService({ chroma: rest, storage, storagePrefix: "chromadb/", retention: { keepLast: 5, keepSafety: 3 }, log: () => {} });
  const status = await service.status();
  expect(status.chroma).toMatchObject({ collections: 1, records: 25 });
  const manifest = await takeSnapshot(rest, storage);
  expect(manifest.collections.map((c) => c.name)).toEqual(["notes"]);
  expect(manifest.records).toBe(25);
});
