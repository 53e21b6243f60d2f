import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { RestoreIncompatibleError } from "../../lib/errors.js";
import { JsonColumn } from "../../lib/json/json-column.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { asIncompatible } from "../../lib/snapshot/compatibility.js";
import type { Manifest } from "../../lib/snapshot/manifest.js";
import { restoreSnapshot } from "../../lib/snapshot/restore.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { toApiError } from "../../handlers/errors.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { startNewerChroma, type NewerChroma } from "../fixtures/chroma-newer.js";
import { addRecords, collectionId, createCollection, describeCollection, dumpCollection, listCollectionNames, makeRecords, type RecordSpec } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";

/**
 * Backups and restores across Chroma versions: 1.0 (the default bindings) and 1.3.4
 * (scripts/chroma-newer.sh). Without 1.3.4 these fail, unless CHROMA_NEWER=skip.
 */
let old: TestChroma;
let newer: NewerChroma | null;
let oldRest: ChromaRest;
let newRest: ChromaRest;

const base = (url: string) => `${url}/api/v2/tenants/default_tenant/databases/default_database`;

async function post(url: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${base(url)}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** Every metadata value type Chroma 1.3 has locally: scalars, floats written as `2.0`, int64 past 2^53, and arrays of each. */
function arrayRecords(count: number, prefix: string): RecordSpec[] {
  return makeRecords(count, 8, 7, prefix).map((r, i) => ({
    ...r,
    metadataJson:
      i % 4 === 0
        ? `{"ints":[1,2,3],"floats":[1.0,2.5,-0.0],"big":9007199254740993,"two":2.0}`
        : i % 4 === 1
          ? `{"tags":["a","b\\"q","ü"],"flags":[true,false],"secret":"s-${i}"}`
          : i % 4 === 2
            ? `{"n":${i},"x":2.0,"secret":"k"}`
            : r.metadataJson,
  }));
}

/** Chroma 1.3 answers `{}` for a record added with null metadata, 1.0 `null` (DESIGN.md): the same record. */
const sameEmpty = (dump: string) => {
  const records = parseDump(dump);
  for (const r of records.values()) if (r.metadata === "{}") r.metadata = "null";
  return records;
};

beforeAll(async () => {
  old = await startTestChroma();
  oldRest = new ChromaRest({ url: old.url });
  newer = await startNewerChroma("test/chroma/cross-version.test.ts (every test)");
  if (newer) newRest = new ChromaRest({ url: newer.url });
}, 300_000);

afterAll(async () => {
  await newer?.close();
  await old?.close();
});

describe("cross-version restore", () => {
  it("restores a Chroma 1.0 snapshot into 1.3 exactly", async (ctx) => {
    if (!newer) return ctx.skip();
    const id = await createCollection(old.url, "from-old", '{"hnsw":{"space":"ip","ef_search":300}}', '{"owner":"a","ratio":1.0}');
    await addRecords(old.url, id, makeRecords(600, 16, 3, "old"));
    const storage = memoryStorage();
    const manifest = await takeSnapshot(oldRest, storage);
    expect(manifest.collections[0]!.schemaJson).toBeUndefined();
    const restored = await restoreSnapshot(newRest, storage, manifest);
    expect(restored[0]!.warnings).toEqual([]);
    const after = (await describeCollection(newer.url, "from-old"))!;
    const before = (await describeCollection(old.url, "from-old"))!;
    expect(after.metadata).toEqual(before.metadata);
    expect(after.configuration_json).toEqual(before.configuration_json);
    expectSameRecords(sameEmpty(await dumpCollection(old.url, id)), sameEmpty(await dumpCollection(newer.url, after.id)), false);
  });

  let arraysSnapshot: Manifest;
  let arraysStore: Storage;

  it("restores 1.3 -> 1.3 with a custom schema and array metadata, schema equal key by key", async (ctx) => {
    if (!newer) return ctx.skip();
    // A non-default schema: the server's default with one key's inverted index off and another's on ints off.
    const defaults = await post(newer.url, "/collections", { name: "schema-default" });
    const schema = structuredClone(defaults.schema) as { keys: Record<string, unknown> };
    schema.keys.secret = { string: { string_inverted_index: { enabled: false, config: {} } } };
    schema.keys.n = { int: { int_inverted_index: { enabled: false, config: {} } } };
    const created = await post(newer.url, "/collections", { name: "with-schema", schema, metadata: { kind: "arrays", ratio: 2.0 } });
    await addRecords(newer.url, created.id as string, arrayRecords(400, "arr"));
    arraysStore = memoryStorage();
    arraysSnapshot = await takeSnapshot(newRest, arraysStore, { collections: ["with-schema"] });
    const entry = arraysSnapshot.collections[0]!;
    // The server adds the keys it sees in records to the schema: the snapshot holds it as it stood.
    const source = (await (await fetch(`${base(newer.url)}/collections/with-schema`)).json()) as { schema: unknown };
    expect(JSON.parse(entry.schemaJson!)).toEqual(source.schema);
    expect(JSON.parse(entry.schemaJson!)).toMatchObject({ keys: { secret: { string: { string_inverted_index: { enabled: false } } } } });

    const restored = await restoreSnapshot(newRest, arraysStore, arraysSnapshot, { rename: { "with-schema": "with-schema-copy" } });
    expect(restored[0]!.warnings).toEqual([]);
    const copy = (await newRest.getCollection("with-schema-copy"))!;
    const want = JSON.parse(entry.schemaJson!) as Record<string, Record<string, unknown>>;
    const got = JSON.parse(copy.schemaJson!) as Record<string, Record<string, unknown>>;
    for (const part of ["defaults", "keys"]) {
      expect(Object.keys(got[part]!).sort()).toEqual(Object.keys(want[part]!).sort());
      for (const key of Object.keys(want[part]!)) expect(got[part]![key], `schema ${part}.${key}`).toEqual(want[part]![key]);
    }
    expect(copy.configurationJson).toBe(entry.configurationJson);
    expect(copy.metadataJson).toBe(entry.metadataJson);
    const records = await dumpCollection(newer.url, created.id as string);
    expect(records).toContain("9007199254740993");
    expectSameRecords(parseDump(records), parseDump(await dumpCollection(newer.url, copy.id)), false);
    // The probe's scratch collection is gone.
    expect((await listCollectionNames(newer.url)).filter((n) => n.includes(".restore-"))).toEqual([]);
  });

  it("refuses 1.3 array metadata into 1.0 with 422 restore_incompatible and leaves the target untouched", async (ctx) => {
    if (!newer || !arraysSnapshot) return ctx.skip();
    const id = await createCollection(old.url, "with-schema", '{"hnsw":{"space":"l2"}}');
    await addRecords(old.url, id, makeRecords(50, 8, 11, "keep"));
    const before = await dumpCollection(old.url, id);
    const names = await listCollectionNames(old.url);
    const error = await restoreSnapshot(oldRest, arraysStore, arraysSnapshot).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RestoreIncompatibleError);
    const api = toApiError(error);
    expect(api.status).toBe(422);
    expect(api.code).toBe("restore_incompatible");
    expect(api.message).toContain("with-schema");
    expect(api.message).toContain("array metadata needs a newer Chroma than the target");
    expect(api.details).toMatchObject({ collection: "with-schema", record: "arr-0", field: "floats" });
    expect(await collectionId(old.url, "with-schema")).toBe(id);
    expectSameRecords(parseDump(await dumpCollection(old.url, id)), parseDump(before), false);
    expect(await listCollectionNames(old.url)).toEqual(names);
  });

  it("refuses a multi-collection snapshot where one collection cannot go: nothing replaced", async (ctx) => {
    if (!newer) return ctx.skip();
    const plainId = (await post(newer.url, "/collections", { name: "a-plain" })).id as string;
    await addRecords(newer.url, plainId, makeRecords(100, 8, 21, "plain"));
    const arraysId = (await post(newer.url, "/collections", { name: "b-arrays" })).id as string;
    const records = makeRecords(100, 8, 22, "b");
    records[70] = { ...records[70]!, metadataJson: '{"list":["x","y"]}' };
    await addRecords(newer.url, arraysId, records);
    const storage = memoryStorage();
    const manifest = await takeSnapshot(newRest, storage, { collections: ["a-plain", "b-arrays"] });

    const targetId = await createCollection(old.url, "a-plain", '{"hnsw":{"space":"l2"}}');
    await addRecords(old.url, targetId, makeRecords(30, 8, 23, "old-a"));
    const before = await dumpCollection(old.url, targetId);
    const names = await listCollectionNames(old.url);
    const error = await restoreSnapshot(oldRest, storage, manifest).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RestoreIncompatibleError);
    expect((error as RestoreIncompatibleError).incompatibility).toMatchObject({ collection: "b-arrays", record: "b-70", field: "list" });
    expect(await collectionId(old.url, "a-plain")).toBe(targetId);
    expectSameRecords(parseDump(await dumpCollection(old.url, targetId)), parseDump(before), false);
    expect(await listCollectionNames(old.url)).toEqual(names);
  });

  it("restores a 1.3 collection with a custom schema into 1.0 from its configuration, warning about the schema", async (ctx) => {
    if (!newer) return ctx.skip();
    const defaults = await post(newer.url, "/collections", { name: "schema-default-2" });
    const schema = structuredClone(defaults.schema) as { keys: Record<string, unknown> };
    schema.keys.secret = { string: { string_inverted_index: { enabled: false, config: {} } } };
    const created = await post(newer.url, "/collections", { name: "schema-scalars", schema });
    await addRecords(newer.url, created.id as string, makeRecords(120, 8, 31, "sc"));
    const storage = memoryStorage();
    const manifest = await takeSnapshot(newRest, storage, { collections: ["schema-scalars"] });
    const logged: string[] = [];
    const restored = await restoreSnapshot(oldRest, storage, manifest, { log: (level, message) => level === "warn" && logged.push(message) });
    expect(restored[0]!.warnings).toHaveLength(1);
    expect(restored[0]!.warnings[0]).toContain("no collection schema");
    expect(restored[0]!.warnings[0]).toContain("secret");
    expect(logged).toEqual(restored[0]!.warnings);
    const copy = (await oldRest.getCollection("schema-scalars"))!;
    expect(copy.schemaJson).toBeNull();
    expectSameRecords(sameEmpty(await dumpCollection(newer.url, created.id as string)), sameEmpty(await dumpCollection(old.url, copy.id)), false);
  });

  it("maps Chroma 1.0's own refusal of array metadata to restore_incompatible, naming the record and field", async () => {
    const scratch = await oldRest.createCollection("refusal-check", "null", "null");
    const batch = { ids: ["r0", "r1"], dim: 1, embeddings: new Float32Array([0.1, 0.2]), documents: JsonColumn.fromValues([null, null]), uris: [null, null], metadatas: ['{"a":1}', '{"tags":["x"]}'] };
    const refusal = await oldRest.writeRecords(scratch.id, batch, "add").catch((e: unknown) => e);
    const mapped = asIncompatible(refusal, "refusal-check", batch);
    expect(mapped).toBeInstanceOf(RestoreIncompatibleError);
    expect((mapped as RestoreIncompatibleError).incompatibility).toMatchObject({ collection: "refusal-check", record: "r1", field: "tags" });
    expect(toApiError(mapped).code).toBe("restore_incompatible");
  });
});
