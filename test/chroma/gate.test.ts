/**
 * The gate in front of a real embedded Chroma, used by a real chromadb client: refused
 * while closed, a transparent proxy while open, writes counted and reads not, 503 while
 * Chroma is down.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ChromaClient } from "chromadb";
import { afterAll, beforeAll, expect, it } from "vitest";
import { freePort, startEmbeddedChroma, type EmbeddedChroma } from "../../lib/chroma/embedded.js";
import { ChromaGate, GateListenError, mayChangeData } from "../../lib/chroma/gate.js";
import { silentLogger } from "../../lib/log.js";

let chroma: EmbeddedChroma;
let dataDir: string;
let port: number;
let up = true;
let gate: ChromaGate;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "chroma-gate-"));
  chroma = await startEmbeddedChroma({ dataDir });
  port = await freePort();
  gate = new ChromaGate({ host: "127.0.0.1", port, target: () => chroma.url, log: silentLogger, isUp: () => up && chroma.up });
});
afterAll(async () => {
  await gate?.close();
  await chroma?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

/** The error code of a connection to the gate's port (null when it was accepted). */
function connectionError(): Promise<string | null> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/api/v2/heartbeat" }, (res) => {
      res.resume();
      resolve(null);
    });
    req.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.end();
  });
}

it("tells reads from writes by Chroma's v2 routes", () => {
  const c = "/api/v2/tenants/t/databases/d/collections/0b7f";
  expect(mayChangeData("GET", `${c}/count`)).toBe(false);
  expect(mayChangeData("HEAD", "/api/v2/heartbeat")).toBe(false);
  for (const read of ["get", "query", "search"]) expect(mayChangeData("POST", `${c}/${read}`), read).toBe(false);
  for (const write of ["add", "upsert", "update", "delete", "fork"]) expect(mayChangeData("POST", `${c}/${write}`), write).toBe(true);
  expect(mayChangeData("POST", "/api/v2/tenants/t/databases/d/collections")).toBe(true);
  expect(mayChangeData("PUT", c)).toBe(true);
  expect(mayChangeData("DELETE", c)).toBe(true);
  expect(mayChangeData("POST", "/api/v2/reset")).toBe(true);
  // A collection named "get" is still written to.
  expect(mayChangeData("POST", "/api/v2/tenants/t/databases/d/collections/get/add")).toBe(true);
});

it("refuses connections while closed, proxies a chromadb client while open, counts writes and not reads", async () => {
  expect(gate.isOpen).toBe(false);
  expect(gate.address()).toBeNull();
  expect(await connectionError()).toBe("ECONNREFUSED");

  await gate.open("test");
  expect(gate.isOpen).toBe(true);
  expect(gate.address()).toEqual({ host: "127.0.0.1", port });
  expect(gate.writes).toBe(0);
  expect(gate.lastWriteAt).toBeNull();

  const client = new ChromaClient({ host: "127.0.0.1", port, ssl: false });
  const collection = await client.createCollection({ name: "through-the-gate", embeddingFunction: null });
  const afterCreate = gate.writes;
  expect(afterCreate).toBe(1);

  const ids = Array.from({ length: 1000 }, (_, i) => `id-${i}`);
  await collection.add({
    ids,
    embeddings: ids.map((_, i) => [i, i / 2, 1]),
    documents: ids.map((id) => `document ${id} `.repeat(20)),
    metadatas: ids.map((_, i) => ({ i })),
  });
  expect(gate.writes).toBe(afterCreate + 1);
  const lastWrite = gate.lastWriteAt;
  expect(lastWrite).toBeInstanceOf(Date);

  // Reads: several routes, none counted.
  const got = await collection.get({ ids: ["id-7"], include: ["documents", "metadatas", "embeddings"] });
  expect(got.metadatas).toEqual([{ i: 7 }]);
  expect(got.embeddings).toEqual([[7, 3.5, 1]]);
  expect(await collection.count()).toBe(1000);
  const found = await collection.query({ queryEmbeddings: [[42, 21, 1]], nResults: 1 });
  expect(found.ids).toEqual([["id-42"]]);
  expect((await client.listCollections()).map((c) => c.name)).toEqual(["through-the-gate"]);
  expect(gate.writes).toBe(afterCreate + 1);
  expect(gate.lastWriteAt).toBe(lastWrite);

  // The data went to the Chroma behind the gate.
  const direct = new ChromaClient({ host: "127.0.0.1", port: chroma.port, ssl: false });
  expect(await (await direct.getCollection({ name: "through-the-gate" })).count()).toBe(1000);

  await collection.delete({ ids: ["id-0"] });
  expect(gate.writes).toBe(afterCreate + 2);

  await gate.close();
  expect(gate.isOpen).toBe(false);
  expect(await connectionError()).toBe("ECONNREFUSED");
});

it("answers 503 chroma_unavailable while Chroma is down, and proxies again once it is back", async () => {
  await gate.open("test");
  try {
    up = false;
    const res = await fetch(`http://127.0.0.1:${port}/api/v2/heartbeat`);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("chroma_unavailable");
    expect(body.error.message).toMatch(/restarting/);
    up = true;

    // Really down (killed; the supervisor restarts it): 503 until it answers again.
    process.kill(chroma.pid!, "SIGKILL");
    await expect.poll(() => chroma.up, { timeout: 5000 }).toBe(false);
    expect((await fetch(`http://127.0.0.1:${port}/api/v2/heartbeat`)).status).toBe(503);
    await chroma.waitUp(30_000);
    expect((await fetch(`http://127.0.0.1:${port}/api/v2/heartbeat`)).status).toBe(200);
  } finally {
    up = true;
    await gate.close();
  }
});

it("a port already in use fails to open with an error naming it and what to do", async () => {
  await gate.open("test");
  try {
    const second = new ChromaGate({ host: "127.0.0.1", port, target: () => chroma.url, log: silentLogger });
    const err = await second.open("test").then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GateListenError);
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect((err as Error).message).toMatch(/in use.*CHROMA_PORT/);
    expect(second.isOpen).toBe(false);
  } finally {
    await gate.close();
  }
});
