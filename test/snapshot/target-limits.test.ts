/**
 * Restores held to the target's limits (lib/snapshot/target-limits.ts): Chroma Cloud's
 * quotas, forced small here through the same settings CHROMA_TARGET_LIMITS gives, against
 * a real local Chroma behind a real HTTP proxy that counts what each write carries.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { loadConfig } from "../../lib/config.js";
import { InvalidRequestError } from "../../lib/errors.js";
import { silentLogger } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { CHROMA_CLOUD_LIMITS, isChromaCloud, MAX_LISTED, parseTargetLimits, targetLimits, type TargetLimitSettings } from "../../lib/snapshot/target-limits.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import type { Storage } from "../../lib/storage/types.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, dumpCollection, listCollectionNames, makeRecords, type RecordSpec } from "../fixtures/dataset.js";
import { client, expectError, makeApp, type Client } from "../handlers/harness.js";
import { expectSameRecords, parseDump } from "./compare.js";

/** Forwards to Chroma and records, per add/upsert, how many records it carried and how many were in flight. */
interface CountingProxy {
  url: string;
  /** The writes Chroma took (the target probe's add into no collection is refused, so not counted). */
  writes: { path: string; records: number }[];
  maxInFlight: number;
  close(): Promise<void>;
}

async function startCountingProxy(target: string): Promise<CountingProxy> {
  let inFlight = 0;
  const proxy: CountingProxy = { url: "", writes: [], maxInFlight: 0, close: async () => {} };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      const body = Buffer.concat(parts);
      const write = req.method === "POST" && /\/(add|upsert)$/.test(req.url ?? "");
      if (write) proxy.maxInFlight = Math.max(proxy.maxInFlight, ++inFlight);
      const headers: Record<string, string> = {};
      if (req.headers["content-type"]) headers["content-type"] = req.headers["content-type"];
      fetch(`${target}${req.url}`, { method: req.method, headers, body: body.length ? body : undefined })
        .then(async (answer) => {
          const bytes = Buffer.from(await answer.arrayBuffer());
          if (write && answer.ok) proxy.writes.push({ path: req.url!.replace(/^.*\//, ""), records: (JSON.parse(body.toString()) as { ids: string[] }).ids.length });
          res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
          res.end(bytes);
        })
        .catch(() => res.destroy())
        .finally(() => {
          if (write) inFlight--;
        });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return proxy;
}

let chroma: TestChroma;
let proxy: CountingProxy;

beforeAll(async () => {
  chroma = await startTestChroma();
  proxy = await startCountingProxy(chroma.url);
}, 60_000);

afterAll(async () => {
  await proxy?.close();
  await chroma?.close();
});

function serviceWith(storage: Storage, targetLimits: TargetLimitSettings): { service: BackupService; api: Client } {
  const service = new BackupService({
    chroma: new ChromaRest({ url: proxy.url }),
    storage,
    storagePrefix: "chromadb/",
    retention: { keepLast: 24, keepSafety: 3 },
    log: silentLogger,
    targetLimits,
  });
  return { service, api: client(makeApp(service)) };
}

describe("target limits: settings and the Cloud table", () => {
  it("CHROMA_TARGET_LIMITS is parsed, and a mistake names the variable", () => {
    expect(parseTargetLimits('{"cloud":true,"documentBytes":100,"idBytes":null}')).toEqual({ cloud: true, documentBytes: 100, idBytes: null });
    expect(() => parseTargetLimits("{nope")).toThrow(/JSON object/);
    expect(() => parseTargetLimits('{"documentBytes":0}')).toThrow(/documentBytes/);
    expect(() => parseTargetLimits('{"docBytes":10}')).toThrow(/docBytes.*keys: cloud, recordsPerWrite/s);
    expect(loadConfig({ CHROMA_TARGET_LIMITS: '{"recordsPerWrite":7}' }).chroma.limits).toEqual({ recordsPerWrite: 7 });
    expect(loadConfig({}).chroma.limits).toBeUndefined();
    expect(() => loadConfig({ CHROMA_TARGET_LIMITS: '{"recordsPerWrite":-1}' })).toThrow(InvalidRequestError);
    expect(() => loadConfig({ CHROMA_TARGET_LIMITS: "[1]" })).toThrow(/CHROMA_TARGET_LIMITS/);
  });

  it("a target is Chroma Cloud by its host; Cloud's documented quotas, capped by the pre-flight batch size", async () => {
    expect(isChromaCloud("https://api.trychroma.com")).toBe(true);
    expect(isChromaCloud("https://europe-west1.gcp.trychroma.com:443/")).toBe(true);
    expect(isChromaCloud("http://127.0.0.1:8000")).toBe(false);
    expect(isChromaCloud("https://trychroma.com.example.org")).toBe(false);
    // https://docs.trychroma.com/cloud/quotas-limits
    expect(CHROMA_CLOUD_LIMITS).toMatchObject({ recordsPerWrite: 300, concurrentWrites: 10, documentBytes: 16_384, metadataKeys: 32, metadataValueBytes: 4096, embeddingDimensions: 4096, idBytes: 128 });
    const rest = new ChromaRest({ url: chroma.url });
    const local = await targetLimits(rest);
    expect(local).toMatchObject({ cloud: false, recordsPerWrite: 5461, concurrentWrites: null, documentBytes: null, metadataKeys: null });
    expect(await targetLimits(rest, { cloud: true })).toEqual({ ...CHROMA_CLOUD_LIMITS, cloud: true });
    expect(await targetLimits(rest, { cloud: true, recordsPerWrite: 9000, documentBytes: null })).toMatchObject({ recordsPerWrite: 5461, documentBytes: null, idBytes: 128 });
  });
});

describe("restore into a target with limits (real Chroma)", () => {
  const LIMITS: TargetLimitSettings = { documentBytes: 100, metadataKeys: 5, idBytes: 24, recordsPerWrite: 7, concurrentWrites: 1 };
  const LONG_DOCS = 25;
  let storage: Storage;
  let snapshot: string;
  let liveBefore: { fits: string; big: string };
  const expectLiveUnchanged = async (name: "fits" | "big") => expectSameRecords(parseDump(liveBefore[name]), parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, name))), false);

  /** "big": every fifth record's document is too long, one record has 6 metadata keys, one a 30-byte id. */
  function bigRecords(): RecordSpec[] {
    const records = makeRecords(125, 8, 11, "big");
    for (let i = 0; i < records.length; i += 5) records[i]!.documentJson = JSON.stringify(`ü${"x".repeat(99)}-${i}`); // 101+ bytes
    records[3]!.metadataJson = '{"a":1,"b":2,"c":3,"d":4,"e":"five","f":true}';
    records[4]!.id = `big-${"i".repeat(26)}`;
    return records;
  }

  beforeAll(async () => {
    storage = memoryStorage();
    await addRecords(chroma.url, await createCollection(chroma.url, "fits", '{"hnsw":{"space":"l2"}}'), makeRecords(60, 8, 5, "fits"));
    await addRecords(chroma.url, await createCollection(chroma.url, "big", '{"hnsw":{"space":"l2"}}'), bigRecords());
    const { api } = serviceWith(storage, {});
    const backup = await api.post("/backups", {});
    expect(backup.status, backup.text).toBe(201);
    snapshot = backup.body.id;
    expect(snapshot).toMatch(/^\d{8}T/);
    // The live collections change after the snapshot: a restore that went ahead would undo this.
    await addRecords(chroma.url, await collectionId(chroma.url, "fits"), makeRecords(3, 8, 99, "later"));
    await addRecords(chroma.url, await collectionId(chroma.url, "big"), makeRecords(2, 8, 98, "later"));
    liveBefore = { fits: await dumpCollection(chroma.url, await collectionId(chroma.url, "fits")), big: await dumpCollection(chroma.url, await collectionId(chroma.url, "big")) };
  }, 60_000);

  it("a dry run lists the records that would not fit (collection, id, field, size vs limit), the first 20 and a count, and changes nothing", async () => {
    const { api } = serviceWith(storage, LIMITS);
    const dry = await api.post("/restore", { snapshot, dryRun: true });
    expect(dry.status, dry.text).toBe(200);
    expect(dry.body).toMatchObject({ restored: false, dryRun: true, snapshot });
    const { count, first } = dry.body.wouldNotFit as { count: number; first: { collection: string; record: string | null; field: string; size: number; limit: number; name: string }[] };
    expect(count).toBe(LONG_DOCS + 2);
    expect(first).toHaveLength(MAX_LISTED);
    for (const m of first) expect(m.collection).toBe("big");
    expect(first).toContainEqual({ collection: "big", record: "big-0", field: "document", size: 103, limit: 100, name: "documentBytes" });
    expect(first).toContainEqual({ collection: "big", record: "big-3", field: "metadata", size: 6, limit: 5, name: "metadataKeys" });
    expect(first).toContainEqual({ collection: "big", record: `big-${"i".repeat(26)}`, field: "id", size: 30, limit: 24, name: "idBytes" });
    // Only the collection that fits: nothing would not fit.
    const fitsOnly = await api.post("/restore", { snapshot, collections: ["fits"], dryRun: true });
    expect(fitsOnly.body.wouldNotFit).toEqual({ count: 0, first: [] });
    await expectLiveUnchanged("big");
  });

  it("a real restore with records that cannot fit is refused up front: 422 restore_incompatible, nothing replaced, no write sent", async () => {
    const { api } = serviceWith(storage, LIMITS);
    proxy.writes.length = 0;
    const refused = await api.post("/restore", { snapshot, safetySnapshot: false });
    expectError(refused, 422, "restore_incompatible", /^collection big: record "big-[^"]+", .+ the target takes at most \d+ \((documentBytes|metadataKeys|idBytes)\); 27 in all would not fit .*nothing was replaced$/);
    expect(refused.body.error.details).toMatchObject({ collection: "big", count: LONG_DOCS + 2 });
    expect(refused.body.error.details.size).toBeGreaterThan(refused.body.error.details.limit);
    expect(refused.body.error.details.first).toHaveLength(MAX_LISTED);
    expect(proxy.writes).toEqual([]);
    // Neither collection replaced (the one that fits included), and nothing left aside.
    await expectLiveUnchanged("fits");
    await expectLiveUnchanged("big");
    expect((await listCollectionNames(chroma.url)).sort()).toEqual(["big", "fits"]);
  });

  it("what fits is written in batches of at most recordsPerWrite, one write in flight per concurrentWrites", async () => {
    const { api } = serviceWith(storage, LIMITS);
    proxy.writes.length = 0;
    proxy.maxInFlight = 0;
    const restored = await api.post("/restore", { snapshot, collections: ["fits"], rename: { fits: "fits-copy" } });
    expect(restored.status, restored.text).toBe(200);
    expect(restored.body.collections).toEqual([{ name: "fits-copy", records: 60 }]);
    expect(proxy.writes.reduce((n, w) => n + w.records, 0)).toBe(60);
    expect(Math.max(...proxy.writes.map((w) => w.records))).toBe(7);
    expect(proxy.maxInFlight).toBe(1);
    // Without limits the same restore goes in one batch per chunk, several in flight allowed: the limits made the difference.
    const free = serviceWith(storage, {});
    proxy.writes.length = 0;
    expect((await free.api.post("/restore", { snapshot, collections: ["fits"], rename: { fits: "fits-copy" }, safetySnapshot: false })).status).toBe(200);
    expect(Math.max(...proxy.writes.map((w) => w.records))).toBeGreaterThan(7);
    const snapshotted = parseDump(liveBefore.fits);
    for (const id of [...snapshotted.keys()]) if (id.startsWith("later-")) snapshotted.delete(id);
    expect(snapshotted.size).toBe(60);
    expectSameRecords(snapshotted, parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "fits-copy"))), false);
  });
});
