import { parseDuration } from "../lib/duration.js";
import type { SnapshotSummary } from "../lib/snapshot/manifest.js";
import { listValue, type OptionValues } from "./args.js";
import { CliError, EXIT, UsageError, exitCodeForStatus, type ExitCode } from "./exit.js";
import { formatBytes, formatCount, formatDuration, formatTime, keyValues, plural, table } from "./format.js";
import type { ProgressEvent } from "../lib/snapshot/progress.js";
import { ProgressBar, Spinner, ndjsonLines, type ProgressOutput } from "./progress.js";
import type { Transport } from "./transport.js";

/** One API call a command makes. */
export interface ApiRequest {
  method: "GET" | "POST" | "DELETE";
  path: string;
  body?: Record<string, unknown>;
  /** What to show while it runs: a bar from NDJSON progress events, a spinner, nothing. */
  progress: "bar" | "spinner" | "none";
  /** For the spinner. */
  label: string;
}

type Json = Record<string, unknown>;

function str(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

function count(values: OptionValues, name: string, command: string): number | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`--${name} must be a whole number, got ${JSON.stringify(v)}`, command);
  return Number(v);
}

function duration(values: OptionValues, name: string, command: string): string | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  try {
    parseDuration(v);
  } catch {
    throw new UsageError(`--${name} must be a duration such as 90s, 15m, 1h or 7d (or seconds), got ${JSON.stringify(v)}`, command);
  }
  return v;
}

function collections(values: OptionValues, command: string): string[] | undefined {
  const list = listValue(values.collections);
  if (list && list.length === 0) throw new UsageError("--collections needs at least one collection name", command);
  return list;
}

function renames(values: OptionValues): Record<string, string> | undefined {
  const list = listValue(values.rename);
  if (!list) return undefined;
  const out: Record<string, string> = {};
  for (const pair of list) {
    const m = /^([^=]+)=([^=]+)$/.exec(pair);
    if (!m) throw new UsageError(`--rename takes FROM=TO, got ${JSON.stringify(pair)}`, "restore");
    const [from, to] = [m[1]!.trim(), m[2]!.trim()];
    if (from in out) throw new UsageError(`--rename names ${JSON.stringify(from)} twice`, "restore");
    out[from] = to;
  }
  return out;
}

/** Drops undefined fields, so the body holds only what the user asked for. */
function compact(body: Json): Json {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

/** The API call for a parsed command line; throws UsageError for bad values. */
export function buildRequest(command: string, values: OptionValues, positionals: string[]): ApiRequest {
  const id = positionals[0] ?? "";
  const idPath = encodeURIComponent(id);
  switch (command) {
    case "backup":
      return {
        method: "POST",
        path: "/backups",
        body: compact({ collections: collections(values, command), ifOlderThan: duration(values, "if-older-than", command), tag: str(values, "tag"), force: values.force ? true : undefined }),
        progress: "bar",
        label: "backing up",
      };
    case "restore":
      return {
        method: "POST",
        path: "/restore",
        body: compact({
          snapshot: str(values, "snapshot"),
          collections: collections(values, command),
          rename: renames(values),
          mode: values.merge ? "merge" : undefined,
          ifEmpty: values["if-empty"] ? true : undefined,
          safetySnapshot: values["skip-safety-snapshot"] ? false : undefined,
          dryRun: values["dry-run"] ? true : undefined,
        }),
        progress: "bar",
        label: "restoring",
      };
    case "list": {
      const query = new URLSearchParams();
      const tag = str(values, "tag");
      const limit = count(values, "limit", command);
      if (tag !== undefined) query.set("tag", tag);
      if (limit !== undefined) query.set("limit", String(limit));
      const q = query.toString();
      return { method: "GET", path: `/backups${q ? `?${q}` : ""}`, progress: "none", label: "listing" };
    }
    case "show":
      return { method: "GET", path: `/backups/${idPath}`, progress: "none", label: "reading" };
    case "verify":
      return { method: "POST", path: `/backups/${idPath}/verify`, progress: "spinner", label: `verifying ${id}` };
    case "delete":
      return { method: "DELETE", path: `/backups/${idPath}`, progress: "none", label: "deleting" };
    case "prune": {
      const keepTags = listValue(values["keep-tag"]);
      return {
        method: "POST",
        path: "/prune",
        body: compact({
          keepLast: count(values, "keep-last", command),
          keepHourly: count(values, "keep-hourly", command),
          keepDaily: count(values, "keep-daily", command),
          keepWeekly: count(values, "keep-weekly", command),
          keepMonthly: count(values, "keep-monthly", command),
          keepWithin: duration(values, "keep-within", command),
          keepTags: keepTags && keepTags.length > 0 ? keepTags : undefined,
          dryRun: values["dry-run"] ? true : undefined,
          limit: count(values, "limit", command),
          grace: duration(values, "grace", command),
        }),
        progress: "none",
        label: "pruning",
      };
    }
    case "status":
      return { method: "GET", path: "/status", progress: "none", label: "status" };
    default:
      throw new UsageError(`unknown command "${command}"`, null);
  }
}

export interface CommandIo {
  stdout(text: string): void;
  stderr: ProgressOutput;
}

export interface CommandOptions {
  json: boolean;
  /** Show progress (bar or spinner) on stderr. */
  progress: boolean;
}

/** The outcome of an API call: its status and parsed JSON body (or the raw text). */
interface Answer {
  status: number;
  body: Json | null;
  text: string;
}

/** Runs one command against a transport; returns the exit code. */
export async function runCommand(command: string, request: ApiRequest, transport: Transport, io: CommandIo, options: CommandOptions): Promise<ExitCode> {
  if (options.json) {
    const response = await transport.request(request.method, request.path, { body: request.body });
    const answer = await readAnswer(response);
    io.stdout(answer.text.replace(/\n+$/, "") + "\n");
    if (answer.status >= 300) reportError(io, answer, transport);
    return exitCodeOf(command, answer);
  }
  let answer: Answer;
  if (request.progress === "bar" && options.progress) answer = await streamed(request, transport, io);
  else {
    const spinner = request.progress === "spinner" && options.progress ? new Spinner(io.stderr, request.label) : null;
    try {
      answer = await readAnswer(await transport.request(request.method, request.path, { body: request.body }));
    } finally {
      spinner?.stop();
    }
  }
  if (answer.status >= 300 || answer.body === null) {
    reportError(io, answer, transport);
    return answer.status >= 300 ? exitCodeForStatus(answer.status) : EXIT.failure;
  }
  io.stdout(render(command, answer.body, request));
  return exitCodeOf(command, answer);
}

function exitCodeOf(command: string, answer: Answer): ExitCode {
  const code = exitCodeForStatus(answer.status);
  if (code === EXIT.ok && command === "verify" && answer.body?.ok === false) return EXIT.corrupt;
  return code;
}

async function readAnswer(response: Response): Promise<Answer> {
  const text = await response.text();
  let body: Json | null = null;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed as Json;
  } catch {
    // not JSON (a proxy's error page): reported as text
  }
  return { status: response.status, body, text };
}

/** The NDJSON variant: progress lines drawn as a bar, then the `done` or `error` line. */
async function streamed(request: ApiRequest, transport: Transport, io: CommandIo): Promise<Answer> {
  const response = await transport.request(request.method, request.path, { body: request.body, accept: "application/x-ndjson" });
  if (!/application\/x-ndjson/i.test(response.headers.get("content-type") ?? "")) return readAnswer(response);
  const bar = new ProgressBar(io.stderr);
  try {
    for await (const line of ndjsonLines(response.body!)) {
      const { event, ...rest } = line;
      if (event === "progress") bar.update(rest as unknown as ProgressEvent);
      else if (event === "done") {
        bar.finish();
        return { status: response.status, body: rest, text: JSON.stringify(rest) };
      } else if (event === "error") {
        bar.clear();
        const { status, ...error } = rest;
        return { status: typeof status === "number" ? status : 500, body: error, text: JSON.stringify(error) };
      }
    }
  } catch (err) {
    bar.clear();
    throw new CliError(`the progress stream from ${transport.describe} broke: ${(err as Error).message}`, EXIT.failure, { cause: err });
  }
  bar.clear();
  throw new CliError(`the progress stream from ${transport.describe} ended before the operation finished`, EXIT.failure);
}

function reportError(io: CommandIo, answer: Answer, transport: Transport): void {
  const error = answer.body?.error as { code?: string; message?: string; details?: unknown } | undefined;
  if (!error) {
    io.stderr.write(`chroma-backup: error: ${transport.describe} answered ${answer.status}: ${answer.text.slice(0, 500) || "(empty body)"}\n`);
    return;
  }
  const lines = [`chroma-backup: error: ${error.message ?? error.code ?? `status ${answer.status}`}`];
  const details = error.details as Json | Json[] | undefined;
  if (answer.status === 401) lines.push("  pass --token TOKEN or set BACKUP_API_TOKEN (the token the service was started with)");
  else if (answer.status === 409 && details && !Array.isArray(details)) {
    if (details.holder) lines.push(`  the lock is held by ${String(details.holder)}${details.operation ? ` (${String(details.operation)})` : ""}${details.expiresAt ? ` until ${formatTime(String(details.expiresAt))}` : ""}`);
  } else if (answer.status === 422 && details && !Array.isArray(details)) {
    if (details.collection) lines.push(`  collection: ${String(details.collection)}`);
    if (details.chunk) lines.push(`  chunk:      ${String(details.chunk)}`);
  }
  io.stderr.write(lines.join("\n") + "\n");
}

// --- human-readable output -------------------------------------------------------

type Summary = SnapshotSummary;

function ago(iso: string): string {
  return `${formatDuration(Date.now() - Date.parse(iso))} ago`;
}

function render(command: string, body: Json, request: ApiRequest): string {
  switch (command) {
    case "backup":
      return renderBackup(body);
    case "restore":
      return renderRestore(body);
    case "list":
      return renderList(body.snapshots as Summary[], request);
    case "show":
      return renderShow(body);
    case "verify":
      return renderVerify(body, request.label.replace(/^verifying /, ""));
    case "delete":
      return `deleted snapshot ${String(body.deleted)} (chunks only it used are deleted at the next prune)\n`;
    case "prune":
      return renderPrune(body);
    case "status":
      return renderStatus(body);
    default:
      return JSON.stringify(body) + "\n";
  }
}

function renderBackup(body: Json): string {
  if (body.skipped) {
    const latest = body.latest as Summary | undefined;
    const hint = body.reason === "unchanged" ? "\nnothing changed since the newest snapshot (--force commits one anyway)" : "";
    const scheduled = typeof body.scheduledAt === "string" ? `\nan automatic backup is scheduled for ${formatTime(body.scheduledAt)}` : "";
    return `backup skipped: ${String(body.reason)}${hint}${scheduled}${latest ? `\nnewest snapshot: ${latest.id} (${formatTime(latest.createdAt)}, ${ago(latest.createdAt)})` : ""}\n`;
  }
  const s = body as unknown as Summary & { warnings?: string[]; retention?: { deleted: string[]; chunksDeleted: number; bytesFreed: number } | null };
  let out = `snapshot ${s.id}${s.tag ? ` [${s.tag}]` : ""}: ${plural(s.collections, "collection")}, ${plural(s.records, "record")}, ${formatBytes(s.bytes)} (${formatBytes(s.newBytes)} new) in ${formatDuration(s.durationMs)}\n`;
  if (s.retention && s.retention.deleted.length > 0) {
    out += `retention: forgot ${plural(s.retention.deleted.length, "snapshot")}, deleted ${plural(s.retention.chunksDeleted, "chunk")} (${formatBytes(s.retention.bytesFreed)})\n`;
  }
  for (const w of s.warnings ?? []) out += `warning: ${w}\n`;
  return out;
}

/** The dry run's records that would not fit the target (the real restore would be refused). */
function renderMisfits(report: { count: number; first: { collection: string; record: string | null; field: string; size: number; limit: number }[] } | undefined): string {
  if (!report || report.count === 0) return "";
  const rows = report.first.map((m) => [m.collection, m.record ?? "", m.field, `${m.size} > ${m.limit}`]);
  return `\n${plural(report.count, "value")} would not fit the target, so the restore would be refused${report.count > rows.length ? ` (the first ${rows.length})` : ""}:\n` + table(["COLLECTION", "RECORD", "FIELD", "SIZE > LIMIT"], rows, []);
}

function renderRestore(body: Json): string {
  if (body.dryRun) {
    const plan = (body.plan as { name: string; from: string; records: number; action: string }[] | undefined) ?? [];
    return (
      `dry run of snapshot ${String(body.snapshot)}: nothing was changed\n` +
      table(
        ["COLLECTION", "FROM", "RECORDS", "ACTION"],
        plan.map((p) => [p.name, p.from === p.name ? "" : p.from, formatCount(p.records), p.action]),
        [2],
      ) +
      renderMisfits(body.wouldNotFit as { count: number; first: { collection: string; record: string | null; field: string; size: number; limit: number }[] } | undefined)
    );
  }
  if (!body.restored) return `nothing restored: ${String(body.reason)}\n`;
  const cols = body.collections as { name: string; records: number }[];
  return (
    `restored snapshot ${String(body.snapshot)} in ${formatDuration(Number(body.durationMs))}: ${plural(cols.length, "collection")}, ${plural(
      cols.reduce((n, c) => n + c.records, 0),
      "record",
    )}\n` +
    table(
      ["COLLECTION", "RECORDS"],
      cols.map((c) => [c.name, formatCount(c.records)]),
      [1],
    ) +
    `safety snapshot: ${body.safetySnapshot ? String(body.safetySnapshot) : "none (nothing was replaced, or it was skipped)"}\n`
  );
}

function renderList(snapshots: Summary[], request: ApiRequest): string {
  if (snapshots.length === 0) return request.path.includes("?") ? "no matching snapshots\n" : "no snapshots yet\n";
  return table(
    ["ID", "CREATED", "AGE", "TAG", "COLLECTIONS", "RECORDS", "SIZE", "NEW", "TOOK"],
    snapshots.map((s) => [s.id, formatTime(s.createdAt), ago(s.createdAt), s.tag ?? "", formatCount(s.collections), formatCount(s.records), formatBytes(s.bytes), formatBytes(s.newBytes), formatDuration(s.durationMs)]),
    [4, 5, 6, 7, 8],
  );
}

function renderShow(body: Json): string {
  const s = body as unknown as Summary & { chroma?: Json; warnings?: string[]; collections: { name: string; records: number; bytes: number; chunks?: number }[] };
  const pairs: [string, string][] = [
    ["snapshot", s.id],
    ["created", `${formatTime(s.createdAt)} (${ago(s.createdAt)})`],
    ["tag", s.tag ?? "-"],
    ["records", formatCount(s.records)],
    ["size", `${formatBytes(s.bytes)} (${formatBytes(s.newBytes)} new when taken)`],
    ["took", formatDuration(s.durationMs)],
  ];
  if (s.chroma && typeof s.chroma === "object") {
    const c = s.chroma;
    if (c.url || c.version) pairs.push(["chroma", [c.url, c.version ? `version ${String(c.version)}` : null].filter(Boolean).join(", ")]);
  }
  let out = keyValues(pairs) + "\n";
  out += table(
    ["COLLECTION", "RECORDS", "SIZE", "CHUNKS"],
    s.collections.map((c) => [c.name, formatCount(c.records), formatBytes(c.bytes), c.chunks === undefined ? "" : formatCount(c.chunks)]),
    [1, 2, 3],
  );
  for (const w of s.warnings ?? []) out += `warning: ${w}\n`;
  return out;
}

function renderVerify(body: Json, id: string): string {
  const r = body as { ok: boolean; chunks: number; records: number; bytes: number; errors: { chunk: string; collection: string; message: string }[] };
  const counts = `${plural(r.chunks, "chunk")}, ${plural(r.records, "record")}, ${formatBytes(r.bytes)}`;
  if (r.ok) return `snapshot ${id} is intact: ${counts} checked\n`;
  let out = `snapshot ${id} is CORRUPT: ${plural(r.errors.length, "error")} (${counts} checked)\n`;
  for (const e of r.errors) out += `  ${e.collection}: chunk ${e.chunk}: ${e.message}\n`;
  return out;
}

function renderPrune(body: Json): string {
  const r = body as { dryRun: boolean; kept: string[]; deleted: string[]; chunksDeleted: number; bytesFreed: number; remaining: number; warnings?: string[] };
  const verb = r.dryRun ? "would delete" : "deleted";
  let out = r.dryRun ? "dry run: nothing was deleted\n" : "";
  out += `${verb} ${plural(r.deleted.length, "snapshot")}${r.deleted.length ? `: ${r.deleted.join(", ")}` : ""}\n`;
  out += `kept ${plural(r.kept.length, "snapshot")}\n`;
  out += `${verb} ${plural(r.chunksDeleted, "unreferenced chunk")}, ${r.dryRun ? "freeing" : "freed"} ${formatBytes(r.bytesFreed)}\n`;
  if (r.remaining > 0) out += `${plural(r.remaining, "more snapshot")} to delete, left for a later call by --limit\n`;
  for (const w of r.warnings ?? []) out += `warning: ${w}\n`;
  return out;
}

/** The RPO and RTO lines of `status` (absent from an older service). */
function recoveryObjectives(body: Json): [string, string][] {
  const rpo = body.rpo as { lastBackupAgeSeconds: number | null; unprotectedChanges: boolean; nextBackupAt: string | null } | undefined;
  const rto = body.rto as { estimatedRestoreSeconds: number | null; basis: string } | undefined;
  const out: [string, string][] = [];
  if (rpo) {
    const age = rpo.lastBackupAgeSeconds === null ? "no snapshot yet" : `newest snapshot ${formatDuration(rpo.lastBackupAgeSeconds * 1000)} old`;
    out.push(["rpo", `${age}; ${rpo.unprotectedChanges ? "changes since it may be unprotected" : "no unprotected changes"}; next automatic backup ${rpo.nextBackupAt ? formatTime(rpo.nextBackupAt) : "none due"}`]);
  }
  if (rto) out.push(["rto", `${rto.estimatedRestoreSeconds === null ? "-" : `about ${formatDuration(rto.estimatedRestoreSeconds * 1000)}`} (${rto.basis})`]);
  return out;
}

function renderStatus(body: Json): string {
  const chroma = body.chroma as { url: string; reachable: boolean; version: string | null; collections: number | null; records: number | null };
  const storage = body.storage as { driver: string; prefix: string; snapshots: number; chunks: number; storedBytes: number; logicalBytes: number; damagedSnapshots?: { id: string; error: string }[] };
  const last = body.lastBackup as { id: string; createdAt: string; ageSeconds: number } | null;
  const retention = body.retention as Record<string, unknown> | undefined;
  const lock = body.lock as { holder: string; operation: string; expiresAt: string } | null | "unknown";
  const dedup = storage.storedBytes > 0 ? `, dedup ${(storage.logicalBytes / storage.storedBytes).toFixed(1)}x` : "";
  const pairs: [string, string][] = [
    [
      "chroma",
      chroma.reachable
        ? `${chroma.url} (version ${chroma.version ?? "?"}): ${plural(chroma.collections ?? 0, "collection")}, ${plural(chroma.records ?? 0, "record")}`
        : `${chroma.url} UNREACHABLE`,
    ],
    ["storage", `${storage.driver}, prefix ${JSON.stringify(storage.prefix)}: ${plural(storage.snapshots, "snapshot")}, ${plural(storage.chunks, "chunk")}`],
    ["stored", `${formatBytes(storage.storedBytes)} (logical ${formatBytes(storage.logicalBytes)}${dedup})`],
    ["last backup", last ? `${last.id} (${formatTime(last.createdAt)}, ${formatDuration(last.ageSeconds * 1000)} ago)` : "none"],
    [
      "retention",
      retention
        ? Object.entries(retention)
            .map(([k, v]) => `${k} ${String(v)}`)
            .join(", ")
        : "-",
    ],
    ["lock", lock === "unknown" ? "unknown (the store did not answer in time)" : lock ? `held by ${lock.holder} (${lock.operation}) until ${formatTime(lock.expiresAt)}` : "free"],
    ...recoveryObjectives(body),
  ];
  const startup = body.startupRestore as { state: string; lastError?: string; attempts: number } | undefined;
  if (startup && startup.state !== "done" && startup.state !== "none") pairs.push(["startup restore", `${startup.state}${startup.lastError ? `: ${startup.lastError}` : ""} (attempt ${startup.attempts})`]);
  let out = keyValues(pairs);
  for (const d of storage.damagedSnapshots ?? []) out += `warning: snapshot ${d.id} is damaged: ${d.error}\n`;
  for (const w of (body.lastBackup as { warnings?: string[] } | null)?.warnings ?? []) out += `warning: the last backup: ${w}\n`;
  for (const e of (body.errors as { part: string; message: string }[] | undefined) ?? []) out += `warning: could not read ${e.part}: ${e.message}\n`;
  return out;
}
