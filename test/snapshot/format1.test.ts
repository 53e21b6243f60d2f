/**
 * A snapshot written by an earlier version (format 1, CBC1 chunks: test/fixtures/
 * format1-store, see its README) still verifies and restores, and a new backup on top of
 * it (format 2, reusing the old chunks) restores the same records.
 */
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { readCatalog } from "../../lib/snapshot/catalog.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { FORMAT_VERSION } from "../../lib/snapshot/manifest.js";
import { restoreSnapshot } from "../../lib/snapshot/restore.js";
import { verifySnapshot } from "../../lib/snapshot/verify.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, dumpCollection, makeRecords } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "./compare.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/format1-store", import.meta.url));

let chroma: TestChroma;
let rest: ChromaRest;
let dir: string;
let storage: Storage;

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
  dir = await mkdtemp(join(tmpdir(), "format1-"));
  await cp(FIXTURE, dir, { recursive: true });
  storage = withPrefix(fsStorage(dir), "chromadb/");
  // The records the fixture was taken from, written afresh as the reference.
  await addRecords(chroma.url, await createCollection(chroma.url, "ref-l2", '{"hnsw":{"space":"l2"}}'), makeRecords(120, 16, 7, "l2"));
  await addRecords(chroma.url, await createCollection(chroma.url, "ref-cosine", '{"hnsw":{"space":"cosine"}}'), makeRecords(80, 8, 11, "cos"));
}, 60_000);

afterAll(async () => {
  await chroma?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function expectRestoredAsReference(suffix: string): Promise<void> {
  for (const [name, cosine] of [["l2", false], ["cosine", true]] as const) {
    const reference = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, `ref-${name}`)));
    const restored = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, `compat-${name}${suffix}`)));
    expectSameRecords(reference, restored, cosine);
  }
}

it("a format-1 snapshot verifies and restores every record", async () => {
  const { snapshots } = await readCatalog(storage);
  expect(snapshots.map((m) => m.format)).toEqual([1]);
  const old = snapshots[0]!;
  expect(await verifySnapshot(storage, old)).toMatchObject({ ok: true, records: 200, errors: [] });
  await restoreSnapshot(rest, storage, old, { rename: { "compat-l2": "compat-l2-v1", "compat-cosine": "compat-cosine-v1" } });
  await expectRestoredAsReference("-v1");
}, 60_000);

it("a new backup over it is format 2, reuses the old chunks, and restores the same records", async () => {
  const [old] = (await readCatalog(storage)).snapshots;
  await restoreSnapshot(rest, storage, old!);
  const next = await takeSnapshot(rest, storage, { collections: ["compat-l2", "compat-cosine"] });
  expect(next.format).toBe(FORMAT_VERSION);
  const l2 = next.collections.find((c) => c.name === "compat-l2")!;
  // l2 records come back bit-exact, so every one is recognised in the old chunk.
  expect(l2.chunks.map((c) => c.hash)).toEqual(old!.collections.find((c) => c.name === "compat-l2")!.chunks.map((c) => c.hash));
  expect(await verifySnapshot(storage, next)).toMatchObject({ ok: true, records: 200 });
  await restoreSnapshot(rest, storage, next, { rename: { "compat-l2": "compat-l2-v2", "compat-cosine": "compat-cosine-v2" } });
  await expectRestoredAsReference("-v2");
}, 60_000);
