/**
 * A digest sidecar tells the next backup which records a previous chunk holds. Someone
 * who can write to the store could rewrite one to claim that an old chunk holds today's
 * records, so the next backup would reference the old chunk and a restore would bring
 * back old data. The manifest binds each sidecar by its sha256 (`digests`), so a forged
 * sidecar is ignored and the records are written afresh; with SNAPSHOT_SIGNING_KEY that
 * binding is signed too.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { takeSnapshot } from "../../lib/snapshot/backup.js";
import { digestsKey, encodeDigests } from "../../lib/snapshot/chunk.js";
import { recordDigests } from "../../lib/snapshot/records.js";
import { restoreSnapshot } from "../../lib/snapshot/restore.js";
import { ManifestKeys } from "../../lib/snapshot/signing.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { withPrefix } from "../../lib/storage/prefixed.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, dumpCollection, makeRecords } from "../fixtures/dataset.js";
import { parseDump } from "../snapshot/compare.js";

let chroma: TestChroma;
let rest: ChromaRest;
const dirs: string[] = [];

beforeAll(async () => {
  chroma = await startTestChroma();
  rest = new ChromaRest({ url: chroma.url });
}, 60_000);

afterAll(async () => {
  await chroma?.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

for (const signed of [false, true]) {
  it(`a forged sidecar cannot make the next backup keep old records (${signed ? "signed" : "unsigned"} manifests)`, async () => {
    const name = `forged-${signed ? "signed" : "plain"}`;
    const dir = await mkdtemp(join(tmpdir(), "sidecar-"));
    dirs.push(dir);
    const storage = withPrefix(fsStorage(dir), "chromadb/");
    const signing = signed ? new ManifestKeys(["k".repeat(40)]) : undefined;
    const id = await createCollection(chroma.url, name, '{"hnsw":{"space":"l2"}}');
    await addRecords(chroma.url, id, makeRecords(60, 8, 1, "r"));
    const first = await takeSnapshot(rest, storage, { collections: [name], signing });
    const [oldChunk] = first.collections[0]!.chunks;
    expect(first.collections[0]!.chunks).toHaveLength(1);
    expect(oldChunk!.digests).toMatch(/^[0-9a-f]{64}$/);

    // Every record changes; the attacker rewrites the old chunk's sidecar with the new records' digests.
    await addRecords(chroma.url, id, makeRecords(60, 8, 2, "r"), "upsert");
    const now = await rest.getRecords(id, 0, 1000);
    const byId = new Map(now.ids.map((rid, i) => [rid, recordDigests(now).subarray(i * 16, i * 16 + 16)]));
    const forged = new Uint8Array(60 * 16);
    for (let i = 0; i < 60; i++) forged.set(byId.get(`r-${i}`)!, i * 16);
    await storage.put(digestsKey(oldChunk!.hash), encodeDigests(forged));

    const second = await takeSnapshot(rest, storage, { collections: [name], signing });
    expect(second.collections[0]!.chunks.map((c) => c.hash)).not.toContain(oldChunk!.hash);
    const before = parseDump(await dumpCollection(chroma.url, id));
    await restoreSnapshot(rest, storage, second, { rename: { [name]: `${name}-restored` } });
    const after = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, `${name}-restored`)));
    expect([...after.entries()].map(([k, r]) => [k, r.document, r.metadata])).toEqual([...before.entries()].map(([k, r]) => [k, r.document, r.metadata]));
    // The backup also put the true sidecar back, so the one after reuses the chunk again.
    const third = await takeSnapshot(rest, storage, { collections: [name], signing });
    expect(third.collections[0]!.chunks.map((c) => c.hash)).toEqual(second.collections[0]!.chunks.map((c) => c.hash));
    expect(third.newBytes).toBeLessThan(second.newBytes);
  }, 60_000);
}
