import { parseArgs } from "node:util";
import { UsageError } from "./exit.js";

export interface OptionSpec {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
  /** Placeholder shown in the usage, for string options. */
  value?: string;
  help: string;
}

export interface CommandSpec {
  name: string;
  /** Positional arguments, as shown in the usage (e.g. `ID`). */
  args: string[];
  summary: string;
  /** Extra lines for `<command> --help`. */
  notes?: string[];
  options: Record<string, OptionSpec>;
}

export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  url: { type: "string", value: "URL", help: "talk to a running service instead of in-process (env BACKUP_URL)" },
  token: { type: "string", value: "TOKEN", help: "bearer token for --url (env BACKUP_API_TOKEN, else DATA_DIR/api-token)" },
  json: { type: "boolean", help: "print the final JSON response body on one line to stdout; no progress" },
  progress: { type: "boolean", help: "force the progress display on (--no-progress: off); default: on when stderr is a TTY" },
  verbose: { type: "boolean", short: "v", help: "in-process: print the service's JSON log lines to stderr" },
  help: { type: "boolean", short: "h", help: "show help" },
};

export const COMMANDS: CommandSpec[] = [
  {
    name: "backup",
    args: [],
    summary: "take a snapshot of Chroma",
    notes: ["Exits 0 also when the backup was skipped: --if-older-than, or unchanged data (the JSON says skipped: true and why)."],
    options: {
      collections: { type: "string", multiple: true, value: "a,b", help: "only these collections (repeatable or comma-separated)" },
      "if-older-than": { type: "string", value: "DURATION", help: 'skip when the newest snapshot is younger than this ("90s", "15m", "1h", "7d")' },
      tag: { type: "string", value: "TAG", help: "tag the snapshot" },
      force: { type: "boolean", help: "commit a snapshot even when nothing changed since the newest one" },
    },
  },
  {
    name: "restore",
    args: [],
    summary: "restore a snapshot into Chroma",
    notes: ["Exits 0 also when nothing was restored (--if-empty and Chroma is not empty, no snapshot yet, --dry-run)."],
    options: {
      snapshot: { type: "string", value: "ID", help: 'the snapshot to restore (default "latest")' },
      collections: { type: "string", multiple: true, value: "a,b", help: "only these collections of the snapshot (repeatable or comma-separated)" },
      rename: { type: "string", multiple: true, value: "FROM=TO", help: "restore collection FROM under the name TO (repeatable or comma-separated)" },
      merge: { type: "boolean", help: "upsert into existing collections instead of replacing them" },
      "if-empty": { type: "boolean", help: "restore only when no collection in Chroma holds a record" },
      "skip-safety-snapshot": { type: "boolean", help: "do not snapshot the collections about to be replaced first" },
      "dry-run": { type: "boolean", help: "report what would happen; change nothing" },
    },
  },
  {
    name: "list",
    args: [],
    summary: "list snapshots, newest first",
    options: {
      tag: { type: "string", value: "TAG", help: "only snapshots with this tag" },
      limit: { type: "string", value: "N", help: "at most N snapshots" },
    },
  },
  { name: "show", args: ["ID"], summary: "show one snapshot and its collections (ID or latest)", options: {} },
  {
    name: "verify",
    args: ["ID"],
    summary: "read every chunk of a snapshot and check every checksum (ID or latest)",
    notes: ["Exits 5 when the snapshot is corrupt (ok: false)."],
    options: {},
  },
  { name: "delete", args: ["ID"], summary: "delete a snapshot (its chunks go at the next prune)", options: {} },
  {
    name: "prune",
    args: [],
    summary: "apply retention: forget snapshots no rule keeps, then delete unreferenced chunks",
    notes: ["A snapshot is kept if any rule keeps it. Rules left out use the service's defaults (RETENTION_KEEP_LAST)."],
    options: {
      "dry-run": { type: "boolean", help: "report what would be deleted; delete nothing" },
      "keep-last": { type: "string", value: "N", help: "keep the N newest snapshots" },
      "keep-hourly": { type: "string", value: "N", help: "keep the newest snapshot of each of the last N hours" },
      "keep-daily": { type: "string", value: "N", help: "... of each of the last N days" },
      "keep-weekly": { type: "string", value: "N", help: "... of each of the last N weeks" },
      "keep-monthly": { type: "string", value: "N", help: "... of each of the last N months" },
      "keep-within": { type: "string", value: "DURATION", help: 'keep every snapshot younger than this ("7d")' },
      "keep-tag": { type: "string", multiple: true, value: "TAG", help: "keep snapshots with this tag (repeatable or comma-separated)" },
      limit: { type: "string", value: "N", help: "delete at most N snapshots in this call" },
      grace: { type: "string", value: "DURATION", help: 'do not delete unreferenced chunks younger than this (default "1h" with --dry-run, none otherwise: a real prune holds the lock)' },
    },
  },
  { name: "status", args: [], summary: "Chroma, storage, last backup, retention and lock", options: {} },
];

export function commandSpec(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export type ParsedCommandLine =
  | { kind: "help"; command: string | null }
  | { kind: "version" }
  | { kind: "run"; command: string; values: OptionValues; positionals: string[] };

type ParseArgsOptions = NonNullable<Parameters<typeof parseArgs>[0]>["options"];

function toParseArgs(options: Record<string, OptionSpec>): ParseArgsOptions {
  const out: NonNullable<ParseArgsOptions> = {};
  for (const [name, o] of Object.entries(options)) out[name] = { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) };
  return out;
}

/** The index of the command word: the first argument that is neither a global option nor its value. */
function commandIndex(argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return i + 1 < argv.length ? i + 1 : -1;
    if (!a.startsWith("-") || a === "-") return i;
    const name = a.replace(/^--?/, "");
    if (!a.startsWith("--") || name.includes("=")) continue;
    if (GLOBAL_OPTIONS[name]?.type === "string") i++;
  }
  return -1;
}

/**
 * `chroma-backup [global options] <command> [options] [ID]`; global options may also
 * follow the command. Throws UsageError for anything malformed.
 */
export function parseCommandLine(argv: string[]): ParsedCommandLine {
  const at = commandIndex(argv);
  if (at < 0) {
    if (argv.includes("--version")) return { kind: "version" };
    if (argv.includes("--help") || argv.includes("-h") || argv.length === 0) {
      if (argv.length === 0) throw new UsageError("no command given", null);
      return { kind: "help", command: null };
    }
  }
  const word = at < 0 ? undefined : argv[at]!;
  if (word === "help") {
    const topic = argv[at + 1];
    if (topic !== undefined && !commandSpec(topic)) throw new UsageError(`unknown command "${topic}"`, null);
    return { kind: "help", command: topic ?? null };
  }
  if (word === "version") return { kind: "version" };
  const spec = word === undefined ? undefined : commandSpec(word);
  if (!spec) throw new UsageError(word === undefined ? "no command given" : `unknown command "${word}"`, null);

  const rest = [...argv.slice(0, at), ...argv.slice(at + 1)];
  let parsed: { values: OptionValues; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: toParseArgs({ ...GLOBAL_OPTIONS, ...spec.options }), strict: true, allowPositionals: true, allowNegative: true }) as typeof parsed;
  } catch (err) {
    throw new UsageError(cleanParseError((err as Error).message), spec.name);
  }
  if (parsed.values.help) return { kind: "help", command: spec.name };
  for (const [name, value] of Object.entries(parsed.values)) {
    const o = spec.options[name] ?? GLOBAL_OPTIONS[name];
    if (o?.type === "string" && (value === "" || (Array.isArray(value) && value.includes("")))) throw new UsageError(`--${name} needs a value`, spec.name);
  }
  if (parsed.positionals.length > spec.args.length) {
    throw new UsageError(`unexpected argument${parsed.positionals.length - spec.args.length > 1 ? "s" : ""}: ${parsed.positionals.slice(spec.args.length).join(" ")}`, spec.name);
  }
  if (parsed.positionals.length < spec.args.length) throw new UsageError(`missing ${spec.args.slice(parsed.positionals.length).join(" ")}`, spec.name);
  return { kind: "run", command: spec.name, values: parsed.values, positionals: parsed.positionals };
}

/** parseArgs' messages, without the hint about positionals that rarely applies here. */
function cleanParseError(message: string): string {
  return message.replace(/\. To specify a positional argument starting with a '-'.*$/s, "").replace(/^Unknown option/, "unknown option").replace(/^Option/, "option");
}

/** Values of a repeatable, comma-separated option, trimmed, empty parts dropped. */
export function listValue(value: OptionValues[string]): string[] | undefined {
  if (value === undefined || typeof value === "boolean") return undefined;
  const parts = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(",")).map((s) => s.trim()).filter((s) => s !== "");
  return parts;
}
