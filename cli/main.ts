import type { Env } from "../lib/config.js";
import type { Logger } from "../lib/log.js";
import { parseCommandLine, type OptionValues } from "./args.js";
import { buildRequest, runCommand } from "./commands.js";
import { CliError, EXIT, UsageError } from "./exit.js";
import type { ProgressOutput } from "./progress.js";
import { findRunningService } from "./discover.js";
import { remoteTransport, savedToken, type Transport } from "./transport.js";
import { commandUsage, globalUsage, RUN_USAGE, shortUsage } from "./usage.js";

export interface MainIo {
  stdout(text: string): void;
  stderr: ProgressOutput;
  env: Env;
  /** Called with the transport's cleanup, so a signal handler can stop the embedded Chroma. */
  onCleanup?(cleanup: () => Promise<void>): void;
}

/**
 * The in-process service's log: every line as JSON with --verbose; otherwise warnings as
 * they come, and errors only when the command ends in an unexpected failure (exit 1),
 * when "see the service log" means this stderr. Per-request access lines are dropped.
 */
function cliLogger(io: MainIo, verbose: boolean): { log: Logger; flush(exitCode: number): void } {
  const errors: string[] = [];
  const log: Logger = (level, message, fields = {}) => {
    if (verbose) {
      io.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, message, ...fields }) + "\n");
      return;
    }
    if (level === "info" || ("status" in fields && "operation" in fields)) return;
    const { requestId: _r, ...rest } = fields;
    const line = `chroma-backup: ${level}: ${message}${Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : ""}\n`;
    if (level === "warn") io.stderr.write(line);
    else errors.push(line);
  };
  return {
    log,
    flush(exitCode) {
      if (exitCode === EXIT.failure) for (const line of errors) io.stderr.write(line);
    },
  };
}

async function openTransport(values: OptionValues, io: MainIo, log: Logger, command: string): Promise<Transport> {
  let url = (values.url as string | undefined) ?? (io.env.BACKUP_URL || undefined);
  // The service running on this DATA_DIR, rather than a second Chroma on the same files.
  url ??= (await findRunningService(io.env, log)) ?? undefined;
  if (url === undefined) {
    if (values.token !== undefined) throw new UsageError("--token is for --url (or BACKUP_URL); in-process commands need no token", command);
    // Loaded only here: the service, its storage drivers and Hono are not needed for --url or --help.
    const { inProcessTransport } = await import("./inprocess.js");
    return inProcessTransport(io.env, log);
  }
  const token = (values.token as string | undefined) ?? (io.env.BACKUP_API_TOKEN || null) ?? (await savedToken(io.env));
  return remoteTransport(url, token);
}

/** Runs the CLI; returns the exit code. Everything it prints goes through `io`. */
export async function main(argv: string[], io: MainIo): Promise<number> {
  let command: string | null = null;
  try {
    const parsed = parseCommandLine(argv);
    if (parsed.kind === "help") {
      io.stdout(parsed.command ? commandUsage(parsed.command) : globalUsage());
      return EXIT.ok;
    }
    if (parsed.kind === "version") {
      const { VERSION } = await import("../handlers/version.js");
      io.stdout(`chroma-backup ${VERSION}\n`);
      return EXIT.ok;
    }
    command = parsed.command;
    const { values } = parsed;
    const request = buildRequest(parsed.command, values, parsed.positionals);
    const json = values.json === true;
    const progress = typeof values.progress === "boolean" ? values.progress && !json : io.stderr.isTTY && !json;
    const logger = cliLogger(io, values.verbose === true);
    const transport = await openTransport(values, io, logger.log, parsed.command);
    io.onCleanup?.(() => transport.close());
    let code: number = EXIT.failure;
    try {
      code = await runCommand(parsed.command, request, transport, { stdout: io.stdout, stderr: io.stderr }, { json, progress });
      return code;
    } finally {
      await transport.close();
      logger.flush(code);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`chroma-backup: ${err.message}\n\n${shortUsage(err.command ?? null)}`);
      return EXIT.usage;
    }
    if (err instanceof CliError) {
      io.stderr.write(`chroma-backup: error: ${err.message}\n`);
      return err.exitCode;
    }
    const e = err as Error;
    io.stderr.write(`chroma-backup: unexpected error${command ? ` in ${command}` : ""}: ${e?.stack ?? String(err)}\n`);
    return EXIT.failure;
  }
}

function write(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((done) => {
    if (stream.write(text)) done();
    else stream.once("drain", () => done());
  });
}

/** The process entry (bin/chroma-backup.js): real stdio, signals, exit code. */
export async function run(argv: string[] = process.argv.slice(2)): Promise<never> {
  if (argv[0] === "run") {
    if (argv[1] === "--help" || argv[1] === "-h") {
      process.stdout.write(RUN_USAGE);
      process.exit(0);
    }
    // The service itself, in this process: loaded only here.
    const { serveProcess } = await import("../runtime/node.js");
    return serveProcess(argv.slice(1));
  }
  const cleanups: (() => Promise<void>)[] = [];
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`\nchroma-backup: ${signal}: stopping\n`);
    Promise.allSettled(cleanups.map((c) => c())).finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const pending: Promise<void>[] = [];
  const code = await main(argv, {
    // After a signal, the failures the shutdown itself causes are not worth printing.
    stdout: (text) => void (interrupted || pending.push(write(process.stdout, text))),
    stderr: {
      write: (text) => void (interrupted || process.stderr.write(text)),
      get isTTY() {
        return process.stderr.isTTY === true;
      },
      get columns() {
        return process.stderr.columns;
      },
    },
    env: process.env,
    onCleanup: (c) => void cleanups.push(c),
  });
  await Promise.all(pending);
  process.exit(code);
}
