/**
 * The `chroma-backup` command end to end: a real child process (`node bin/chroma-backup.js`)
 * running the service in-process against a real Chroma and an fs store, and once against
 * a running service (--url).
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serve, type ServerType } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../handlers/app.js";
import { freePort } from "../../lib/chroma/embedded.js";
import { ChromaRest } from "../../lib/chroma/rest.js";
import { silentLogger } from "../../lib/log.js";
import { BackupService } from "../../lib/service.js";
import { storageFromConfig } from "../../lib/storage/node.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, createCollection, dumpCollection, listCollectionNames, makeRecords } from "../fixtures/dataset.js";
import { expectSameRecords, parseDump } from "../snapshot/compare.js";
import { serviceFreeEnv } from "../fixtures/service-env.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "chroma-backup.js");
const SNAPSHOT_ID = /^\d{8}T\d{6}Z-[0-9a-f]{4}$/;
const RECORDS = 300;

let chroma: TestChroma;
let dir: string;
let env: Record<string, string>;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as a child process (asynchronously: the --url test serves from this process). */
function cli(args: string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...serviceFreeEnv(), ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The one JSON line --json prints. */
function jsonOut(run: Run): Record<string, unknown> {
  const lines = run.stdout.split("\n").filter((l) => l !== "");
  expect(lines, `stdout: ${run.stdout}\nstderr: ${run.stderr}`).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

async function count(name: string): Promise<number> {
  const id = await collectionId(chroma.url, name);
  const res = await fetch(`${chroma.url}/api/v2/tenants/default_tenant/databases/default_database/collections/${id}/count`);
  return (await res.json()) as number;
}

beforeAll(async () => {
  chroma = await startTestChroma();
  dir = await mkdtemp(join(tmpdir(), "cli-test-"));
  env = { CHROMA_URL: chroma.url, STORAGE: "fs", BACKUP_DIR: join(dir, "backups"), DATA_DIR: join(dir, "data") };
  const id = await createCollection(chroma.url, "cli-src", '{"hnsw":{"space":"l2"}}', '{"purpose":"cli test"}');
  await addRecords(chroma.url, id, makeRecords(RECORDS, 8, 42));
});

afterAll(async () => {
  await chroma?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("chroma-backup in-process", () => {
  let first = "";
  let second = "";

  it("backup --json prints the new snapshot's summary on one line, and no progress", async () => {
    const run = await cli(["backup", "--json"]);
    expect(run.code, run.stderr).toBe(0);
    const body = jsonOut(run);
    expect(body.id).toMatch(SNAPSHOT_ID);
    expect(body).toMatchObject({ skipped: false, collections: 1, records: RECORDS });
    expect(run.stderr).toBe("");
    first = body.id as string;
  });

  it("list --json contains it; list prints a table", async () => {
    const [json, human] = await Promise.all([cli(["list", "--json"]), cli(["list"])]);
    expect(json.code).toBe(0);
    expect((jsonOut(json).snapshots as { id: string }[]).map((s) => s.id)).toEqual([first]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^ID\s+CREATED/);
    expect(human.stdout).toContain(first);
  });

  it("verify exits 0 with ok: true", async () => {
    const [json, human] = await Promise.all([cli(["verify", first, "--json"]), cli(["verify", "latest"])]);
    expect(json.code, json.stderr).toBe(0);
    expect(jsonOut(json)).toMatchObject({ ok: true, records: RECORDS, errors: [] });
    expect(human.code).toBe(0);
    expect(human.stdout).toContain("is intact");
  });

  it("restore --rename puts the collection back under a new name and leaves the original alone", async () => {
    const before = parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "cli-src")));
    const run = await cli(["restore", "--snapshot", first, "--rename", "cli-src=cli-copy", "--json"]);
    expect(run.code, run.stderr).toBe(0);
    expect(jsonOut(run)).toMatchObject({ restored: true, snapshot: first, collections: [{ name: "cli-copy", records: RECORDS }], safetySnapshot: null });
    expect(await listCollectionNames(chroma.url)).toEqual(["cli-copy", "cli-src"]);
    expect(await count("cli-copy")).toBe(RECORDS);
    expect(await count("cli-src")).toBe(RECORDS);
    expectSameRecords(before, parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "cli-src"))), false);
    expectSameRecords(before, parseDump(await dumpCollection(chroma.url, await collectionId(chroma.url, "cli-copy"))), false);
  });

  it("backup --progress streams progress to stderr and prints a summary", async () => {
    const run = await cli(["backup", "--progress", "--tag", "second"]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/cli-src\s+100%\s+300\/300 records/);
    expect(run.stderr).toMatch(/cli-copy\s+100%\s+300\/300 records/);
    const m = /^snapshot (\S+) \[second\]: 2 collections, 600 records/.exec(run.stdout);
    expect(m, run.stdout).not.toBeNull();
    second = m![1]!;
  });

  it("prune --keep-last 1 deletes the older snapshot", async () => {
    const run = await cli(["prune", "--keep-last", "1", "--json"]);
    expect(run.code, run.stderr).toBe(0);
    expect(jsonOut(run)).toMatchObject({ dryRun: false, deleted: [first], kept: [second], remaining: 0 });
  });

  it("show of an unknown id exits 3", async () => {
    const run = await cli(["show", "20200101T000000Z-0000"]);
    expect(run.code).toBe(3);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^chroma-backup: error: .*20200101T000000Z-0000/);
  });

  it("a bad flag exits 2 with what is wrong and the usage", async () => {
    const run = await cli(["backup", "--colections", "a"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("unknown option '--colections'");
    expect(run.stderr).toContain("Usage: chroma-backup backup");
    expect(run.stdout).toBe("");
  });
});

describe("chroma-backup --url", () => {
  let server: ServerType;
  let url: string;
  const token = "cli-test-token";

  beforeAll(async () => {
    const chromaRest = new ChromaRest({ url: chroma.url });
    const storage = await storageFromConfig({ driver: "fs", backupDir: env.BACKUP_DIR!, prefix: "chromadb/" });
    const service = new BackupService({ chroma: chromaRest, storage, storagePrefix: "chromadb/", retention: { keepLast: 24, keepSafety: 3 }, log: silentLogger });
    const app = createApp({ service, token, version: "test", log: silentLogger });
    server = await new Promise<ServerType>((ready) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => ready(s));
    });
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
  });

  it("list --url --token asks the running service", async () => {
    // CHROMA_URL points nowhere: with --url the CLI must not build its own service.
    const run = await cli(["list", "--url", url, "--token", token, "--json"], { CHROMA_URL: "http://127.0.0.1:9", STORAGE: "memory" });
    expect(run.code, run.stderr).toBe(0);
    const snapshots = jsonOut(run).snapshots as { id: string; tag: string | null }[];
    expect(snapshots).toHaveLength(1);
    expect(snapshots[0]!.tag).toBe("second");
  });

  it("a wrong token exits 1; an unreachable service exits 6", async () => {
    const [wrong, down] = await Promise.all([cli(["status", "--token", "nope"], { BACKUP_URL: url }), freePort().then((p) => cli(["list", "--url", `http://127.0.0.1:${p}`, "--token", token]))]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("bearer token is wrong");
    expect(down.code).toBe(6);
    expect(down.stderr).toContain("cannot reach the service");
  });
});
