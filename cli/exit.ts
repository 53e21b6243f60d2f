/** Exit codes scripts can branch on (documented in `chroma-backup --help`). */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  corrupt: 5,
  unavailable: 6,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Exit code of an HTTP answer (or of the `status` of an NDJSON `error` line). */
export function exitCodeForStatus(status: number): ExitCode {
  if (status >= 200 && status < 300) return EXIT.ok;
  if (status === 400 || status === 413) return EXIT.usage;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status === 422) return EXIT.corrupt;
  if (status === 503) return EXIT.unavailable;
  return EXIT.failure;
}

/** A failure the CLI reports with a message and an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Bad flags or arguments: printed with the command's usage, exit 2. */
export class UsageError extends CliError {
  constructor(
    message: string,
    /** The command whose usage to print; null for the global usage. */
    readonly command: string | null,
  ) {
    super(message, EXIT.usage);
  }
}
