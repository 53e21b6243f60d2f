import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Env } from "../lib/config.js";
import { CliError, EXIT } from "./exit.js";

export interface RequestOptions {
  body?: unknown;
  /** `application/x-ndjson` for a progress stream. */
  accept?: string;
}

/** Sends the API's requests somewhere: the app in this process, or a running service. */
export interface Transport {
  /** For error messages: `in-process` or the service URL. */
  readonly describe: string;
  request(method: string, path: string, options?: RequestOptions): Promise<Response>;
  /** Stops what the transport started (the embedded Chroma). */
  close(): Promise<void>;
}

export function requestInit(method: string, token: string | null, options: RequestOptions): RequestInit {
  const headers: Record<string, string> = { accept: options.accept ?? "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  return { method, headers, body };
}

/** HTTP to a running service (`--url`). A refused connection is exit 6. */
export function remoteTransport(baseUrl: string, token: string | null): Transport {
  let base: URL;
  try {
    base = new URL(baseUrl);
    if (base.protocol !== "http:" && base.protocol !== "https:") throw new Error("not http(s)");
  } catch {
    throw new CliError(`--url must be an http(s) URL, got ${JSON.stringify(baseUrl)}`, EXIT.usage);
  }
  const root = base.href.replace(/\/+$/, "");
  return {
    describe: root,
    async request(method, path, options = {}) {
      try {
        return await fetch(root + path, requestInit(method, token, options));
      } catch (err) {
        const cause = (err as Error).cause;
        const why = cause instanceof Error ? cause.message : (err as Error).message;
        throw new CliError(`cannot reach the service at ${root}: ${why}`, EXIT.unavailable, { cause: err });
      }
    },
    async close() {},
  };
}

/** The token for `--url` when none was given: the one a local server generated into DATA_DIR. */
export async function savedToken(env: Env): Promise<string | null> {
  try {
    return (await readFile(join(resolve(env.DATA_DIR || "./data"), "api-token"), "utf8")).trim() || null;
  } catch {
    return null;
  }
}

