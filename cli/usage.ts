import { COMMANDS, GLOBAL_OPTIONS, commandSpec, type OptionSpec } from "./args.js";

const EXIT_CODES = `Exit codes:
  0  success (also: backup skipped by --if-older-than, restore not needed)
  1  failure or unexpected error (incl. 401 wrong token, 5xx)
  2  usage error: bad flags or arguments, invalid request (400), bad configuration
  3  not found: unknown snapshot id (404)
  4  conflict: another backup or prune holds the lock (409)
  5  snapshot corrupt (422), or verify found errors (ok: false)
  6  Chroma, storage or the service at --url unavailable (503, connection refused)`;

const MODES = `Where the work happens:
  By default the CLI runs the service in-process, configured from the same environment
  as the server (CHROMA_URL, STORAGE, BACKUP_DIR, DATA_DIR, STORAGE_PREFIX, S3_*,
  RETENTION_*). Without CHROMA_URL it starts the embedded Chroma on DATA_DIR/chroma for
  the commands that need Chroma (backup, restore, status) and stops it at exit; do not
  do that while a server with the embedded Chroma runs on the same DATA_DIR: use --url.
  With --url URL (or BACKUP_URL) every command is an HTTP call to that running service.
  Without them, a service running on the same DATA_DIR (found through
  DATA_DIR/service.json) is used over HTTP instead of starting a second Chroma.`;

export const RUN_USAGE = `Usage: chroma-backup run [-- CMD [ARGS...]]

Starts the service as \`npm start\` does (the embedded Chroma served to apps at
CHROMA_HOST:CHROMA_PORT, 127.0.0.1:8000 by default; the backup API on PORT; the startup
restore). With CMD: once the service is ready (GET /ready), starts CMD with CHROMA_URL,
CHROMA_HOST, CHROMA_PORT, BACKUP_URL and BACKUP_API_TOKEN in its environment, passes
SIGINT, SIGTERM and SIGHUP on to it, and when CMD exits, stops the service and exits with
CMD's exit code (128 + n for signal n; 127 when CMD cannot be started).
`;

function optionLines(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    return [flag, o.help] as const;
  });
  const width = Math.max(0, ...rows.map(([f]) => f.length));
  return rows.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`);
}

function synopsis(name: string): string {
  const spec = commandSpec(name)!;
  const hasOptions = Object.keys(spec.options).length > 0;
  return `chroma-backup ${name}${hasOptions ? " [options]" : ""}${spec.args.map((a) => ` ${a}`).join("")}`;
}

export function globalUsage(): string {
  const width = Math.max(...COMMANDS.map((c) => `${c.name}${c.args.map((a) => ` ${a}`).join("")}`.length));
  return [
    "Usage: chroma-backup [global options] <command> [options]",
    "",
    "Back up and restore ChromaDB: logical, chunked, content-addressed snapshots.",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${`${c.name}${c.args.map((a) => ` ${a}`).join("")}`.padEnd(width)}  ${c.summary}`),
    `  ${"run -- CMD".padEnd(width)}  start the service, then your app CMD next to it (run --help)`,
    "",
    "Global options (before or after the command):",
    ...optionLines({ ...GLOBAL_OPTIONS, version: { type: "boolean", help: "print the version and exit" } }),
    "",
    "Run `chroma-backup <command> --help` for a command's options.",
    "",
    MODES,
    "",
    EXIT_CODES,
    "",
  ].join("\n");
}

export function commandUsage(name: string): string {
  const spec = commandSpec(name)!;
  const lines = [`Usage: ${synopsis(name)}`, "", `${spec.summary[0]!.toUpperCase()}${spec.summary.slice(1)}.`];
  if (spec.notes) lines.push(...spec.notes);
  if (Object.keys(spec.options).length > 0) lines.push("", "Options:", ...optionLines(spec.options));
  lines.push("", "Global options:", ...optionLines(GLOBAL_OPTIONS), "", EXIT_CODES, "");
  return lines.join("\n");
}

/** The short usage printed after a usage error. */
export function shortUsage(name: string | null): string {
  if (name === null) return `Usage: chroma-backup [global options] <command> [options]\nCommands: ${COMMANDS.map((c) => c.name).join(", ")}\nRun \`chroma-backup --help\` for details.\n`;
  const spec = commandSpec(name)!;
  const lines = [`Usage: ${synopsis(name)}`];
  if (Object.keys(spec.options).length > 0) lines.push("", "Options:", ...optionLines(spec.options));
  lines.push("", `Run \`chroma-backup ${name} --help\` for the global options and exit codes.`, "");
  return lines.join("\n");
}
