import { describe, expect, it } from "vitest";
import { freePort } from "../../lib/chroma/embedded.js";
import { parseCommandLine } from "../../cli/args.js";
import { buildRequest } from "../../cli/commands.js";
import { EXIT, exitCodeForStatus, UsageError } from "../../cli/exit.js";
import { main } from "../../cli/main.js";
import { ndjsonLines, ProgressBar } from "../../cli/progress.js";

function parsed(argv: string[]) {
  const p = parseCommandLine(argv);
  if (p.kind !== "run") throw new Error(`expected a command, got ${p.kind}`);
  return p;
}

function request(argv: string[]) {
  const p = parsed(argv);
  return buildRequest(p.command, p.values, p.positionals);
}

function usageError(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  throw new Error("no UsageError");
}

describe("parseCommandLine", () => {
  it("finds the command after global options and accepts them after it", () => {
    expect(parsed(["--url", "http://x", "--json", "list", "--tag", "t"])).toMatchObject({ command: "list", values: { url: "http://x", json: true, tag: "t" } });
    expect(parsed(["--token=abc", "show", "latest", "--url", "http://x"])).toMatchObject({ command: "show", positionals: ["latest"], values: { token: "abc", url: "http://x" } });
  });

  it("answers help and version", () => {
    expect(parseCommandLine(["--help"])).toEqual({ kind: "help", command: null });
    expect(parseCommandLine(["help", "prune"])).toEqual({ kind: "help", command: "prune" });
    expect(parseCommandLine(["restore", "-h"])).toEqual({ kind: "help", command: "restore" });
    expect(parseCommandLine(["--version"])).toEqual({ kind: "version" });
  });

  it("rejects what is malformed, naming the command whose usage to show", () => {
    expect(usageError(() => parseCommandLine([]))).toMatchObject({ message: "no command given", command: null });
    expect(usageError(() => parseCommandLine(["bakup"]))).toMatchObject({ message: 'unknown command "bakup"', command: null });
    expect(usageError(() => parseCommandLine(["show"]))).toMatchObject({ message: "missing ID", command: "show" });
    expect(usageError(() => parseCommandLine(["verify", "a", "b"]))).toMatchObject({ message: "unexpected argument: b", command: "verify" });
    expect(usageError(() => parseCommandLine(["list", "--keep-last", "1"])).message).toBe("unknown option '--keep-last'");
    expect(usageError(() => parseCommandLine(["backup", "--tag"])).message).toMatch(/--tag/);
    expect(usageError(() => parseCommandLine(["backup", "--tag="])).message).toBe("--tag needs a value");
  });
});

describe("buildRequest", () => {
  it("backup", () => {
    expect(request(["backup"])).toMatchObject({ method: "POST", path: "/backups", body: {}, progress: "bar" });
    expect(request(["backup", "--collections", "a,b", "--collections", "c", "--if-older-than", "1h", "--tag", "nightly"]).body).toEqual({ collections: ["a", "b", "c"], ifOlderThan: "1h", tag: "nightly" });
    expect(request(["backup", "--force"]).body).toEqual({ force: true });
  });

  it("restore", () => {
    expect(request(["restore"]).body).toEqual({});
    expect(request(["restore", "--snapshot", "latest", "--rename", "a=b,c=d", "--rename", "e=f", "--merge", "--if-empty", "--skip-safety-snapshot", "--dry-run"]).body).toEqual({
      snapshot: "latest",
      rename: { a: "b", c: "d", e: "f" },
      mode: "merge",
      ifEmpty: true,
      safetySnapshot: false,
      dryRun: true,
    });
  });

  it("list, show, verify, delete, status", () => {
    expect(request(["list"]).path).toBe("/backups");
    expect(request(["list", "--tag", "pre-restore", "--limit", "5"]).path).toBe("/backups?tag=pre-restore&limit=5");
    expect(request(["show", "latest"])).toMatchObject({ method: "GET", path: "/backups/latest" });
    expect(request(["verify", "20261124T021530Z-3f9a"])).toMatchObject({ method: "POST", path: "/backups/20261124T021530Z-3f9a/verify", progress: "spinner" });
    expect(request(["delete", "a/b"])).toMatchObject({ method: "DELETE", path: "/backups/a%2Fb" });
    expect(request(["status"])).toMatchObject({ method: "GET", path: "/status" });
  });

  it("prune", () => {
    expect(
      request(["prune", "--dry-run", "--keep-last", "3", "--keep-hourly", "24", "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12", "--keep-within", "7d", "--keep-tag", "a,b", "--keep-tag", "c", "--limit", "10", "--grace", "30m"]).body,
    ).toEqual({ keepLast: 3, keepHourly: 24, keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepWithin: "7d", keepTags: ["a", "b", "c"], dryRun: true, limit: 10, grace: "30m" });
  });

  it("rejects bad values as usage errors", () => {
    expect(usageError(() => request(["prune", "--keep-last", "x"])).message).toBe('--keep-last must be a whole number, got "x"');
    expect(usageError(() => request(["prune", "--keep-within", "7 days"])).message).toMatch(/^--keep-within must be a duration/);
    expect(usageError(() => request(["backup", "--if-older-than", "soon"])).message).toMatch(/^--if-older-than must be a duration/);
    expect(usageError(() => request(["restore", "--rename", "a"])).message).toBe('--rename takes FROM=TO, got "a"');
    expect(usageError(() => request(["restore", "--rename", "a=b,a=c"])).message).toBe('--rename names "a" twice');
    expect(usageError(() => request(["backup", "--collections", ","])).message).toMatch(/at least one/);
  });
});

it("maps HTTP statuses to exit codes", () => {
  expect([200, 201, 400, 401, 404, 409, 413, 422, 500, 502, 503].map(exitCodeForStatus)).toEqual([0, 0, 2, 1, 3, 4, 2, 5, 1, 1, 6]);
});

describe("progress", () => {
  it("draws a bar per collection in place on a TTY, with rate and ETA", () => {
    let now = 0;
    const out: string[] = [];
    const bar = new ProgressBar({ write: (s) => out.push(s), isTTY: true, columns: 120 }, () => now);
    now = 1000;
    bar.update({ collection: "docs", records: 100, totalRecords: 400, bytes: 2048 });
    now = 2000;
    bar.update({ collection: "docs", records: 400, totalRecords: 400, bytes: 8192 });
    bar.update({ collection: "more", records: 5, totalRecords: 10, bytes: 0 });
    bar.finish();
    expect(out[0]).toBe("\r\x1b[2Kdocs [████████░░░░░░░░░░░░░░░░░░░░░░]  25%  100/400 records  2.0 KB  100 rec/s  ETA 3.0s");
    expect(out[2]).toBe("\r\x1b[2Kdocs [██████████████████████████████] 100%  400/400 records  8.0 KB  in 2.0s\n");
    const last = out.at(-1)!;
    expect(last.startsWith("\r\x1b[2Kmore [███████████████░░░░░░░░░░░░░░░]  50%  5/10 records  in ")).toBe(true);
    expect(last.endsWith("\n")).toBe(true);
  });

  it("prints one line per finished collection elsewhere", () => {
    const out: string[] = [];
    const bar = new ProgressBar({ write: (s) => out.push(s), isTTY: false }, () => 0);
    bar.update({ collection: "a", records: 1, totalRecords: 2, bytes: 0 });
    bar.update({ collection: "a", records: 2, totalRecords: 2, bytes: 0 });
    bar.update({ collection: "b", records: 3, totalRecords: 3, bytes: 0 });
    bar.finish();
    expect(out).toEqual(["a  100%  2/2 records  in 1ms\n", "b  100%  3/3 records  in 1ms\n"]);
  });

  it("reads NDJSON split anywhere", async () => {
    const text = '{"event":"progress","records":1}\n{"event":"done","id":"x"}\n';
    const bytes = new TextEncoder().encode(text);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 7) c.enqueue(bytes.slice(i, i + 7));
        c.close();
      },
    });
    const lines = [];
    for await (const line of ndjsonLines(body)) lines.push(line);
    expect(lines).toEqual([
      { event: "progress", records: 1 },
      { event: "done", id: "x" },
    ]);
  });
});

describe("main, in-process", () => {
  async function runMain(argv: string[], env: Record<string, string>) {
    let stdout = "";
    let stderr = "";
    const code = await main(argv, { stdout: (s) => void (stdout += s), stderr: { write: (s) => void (stderr += s), isTTY: false }, env });
    return { code, stdout, stderr };
  }

  it("--json prints the body exactly; an unreachable Chroma exits 6", async () => {
    const env = { STORAGE: "memory", CHROMA_URL: `http://127.0.0.1:${await freePort()}` };
    expect(await runMain(["list", "--json"], env)).toEqual({ code: 0, stdout: '{"snapshots":[]}\n', stderr: "" });
    const backup = await runMain(["backup"], env);
    expect(backup.code).toBe(EXIT.unavailable);
    expect(backup.stderr).toMatch(/^chroma-backup: error: Chroma at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
    const status = await runMain(["status"], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^chroma: +http:\/\/127\.0\.0\.1:\d+ UNREACHABLE$/m);
  });

  it("bad configuration is a usage error; --token without --url too", async () => {
    const bad = await runMain(["list"], { STORAGE: "floppy" });
    expect(bad.code).toBe(EXIT.usage);
    expect(bad.stderr).toMatch(/STORAGE must be one of/);
    expect((await runMain(["list", "--token", "t"], { STORAGE: "memory" })).code).toBe(EXIT.usage);
  });

  it("a malformed id is exit 2, an unknown one exit 3", async () => {
    const env = { STORAGE: "memory", CHROMA_URL: "http://127.0.0.1:9" };
    expect((await runMain(["show", "nope"], env)).code).toBe(EXIT.usage);
    expect((await runMain(["delete", "20200101T000000Z-0000"], env)).code).toBe(EXIT.notFound);
    expect((await runMain(["verify", "latest", "--json"], env)).code).toBe(EXIT.notFound);
  });
});
