import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { BackupError } from "../errors.js";
import type { Logger } from "../log.js";

/** The gate could not listen where apps expect Chroma. */
export class GateListenError extends BackupError {
  override name = "GateListenError";
}

export interface ChromaGateOptions {
  /** Where apps reach Chroma (CHROMA_HOST, CHROMA_PORT). */
  host: string;
  port: number;
  /** The embedded Chroma's own base URL (a private loopback port), read per request: it may move. */
  target: () => string;
  log: Logger;
  /** False while Chroma is down (its supervisor restarting it): requests get 503 then. */
  isUp?: () => boolean;
}

/** POSTs of Chroma's v2 API that only read (get, query, search); every other POST may write. */
const READ_POST = /^\/api\/v[12]\/.*\/collections\/[^/]+\/(get|query|search)\/?$/;

/** True when a request may change data: any method but GET/HEAD/OPTIONS, except the read-only POSTs. */
export function mayChangeData(method: string, url: string): boolean {
  const m = method.toUpperCase();
  if (m === "GET" || m === "HEAD" || m === "OPTIONS") return false;
  if (m === "POST" && READ_POST.test(url.split("?")[0]!)) return false;
  return true;
}

// Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, not the message.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"]);

function endToEnd(headers: IncomingMessage["headers"]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  return out;
}

/**
 * Serves the embedded Chroma to apps at CHROMA_HOST:CHROMA_PORT, a reverse proxy in the
 * service process in front of Chroma's private port:
 * - closed, it does not listen at all: apps get "connection refused", never an empty
 *   Chroma (before the startup restore succeeded);
 * - open, bodies stream through both ways (never buffered) over keep-alive connections;
 * - while Chroma is down (restarting), requests get 503 `chroma_unavailable` at once,
 *   with Retry-After: 1 (rather than being held: a client's own timeout and retry are the
 *   better judges, and nothing queues up in the service);
 * - it counts requests that may have changed data: the automatic backup's change signal
 *   (an idle Chroma costs nothing to watch).
 */
export class ChromaGate {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private writeCount = 0;
  private lastWrite: Date | null = null;

  constructor(private readonly opts: ChromaGateOptions) {}

  get isOpen(): boolean {
    return this.server !== null;
  }

  /** Monotonic count of requests through the gate that may have changed data. */
  get writes(): number {
    return this.writeCount;
  }

  /** When the last such request finished, or null. */
  get lastWriteAt(): Date | null {
    return this.lastWrite;
  }

  address(): { host: string; port: number } | null {
    const a = this.server?.address();
    return a && typeof a === "object" ? { host: a.address, port: a.port } : null;
  }

  /** Starts listening; `reason` goes to the log (the restore succeeded, an operator opened it). */
  async open(reason: string): Promise<void> {
    if (this.server) return;
    this.agent = new Agent({ keepAlive: true, maxSockets: 64 });
    const server = createServer({ keepAlive: true }, (req, res) => this.forward(req, res));
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
    });
    server.on("clientError", (_err, socket) => socket.destroy());
    const { host, port } = this.opts;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => {
        reject(
          err.code === "EADDRINUSE"
            ? new GateListenError(
                `cannot serve Chroma to apps at ${host}:${port}: the port is in use by another process (another Chroma, or a second chroma-backup?). ` +
                  `Stop it, or set CHROMA_PORT (and your app's Chroma port) to a free port`,
                { host, port },
                { cause: err },
              )
            : new GateListenError(`cannot serve Chroma to apps at ${host}:${port}: ${err.message}`, { host, port }, { cause: err }),
        );
      });
      server.listen(port, host, () => resolve());
    });
    server.removeAllListeners("error");
    server.on("error", (err) => this.opts.log("error", "the Chroma gate failed", { error: err.message }));
    this.server = server;
    this.opts.log("info", "the Chroma gate is open: apps can reach Chroma", { ...this.address(), reason });
  }

  /** Stops accepting connections; requests in flight finish (for up to 5 s), idle connections close. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const force = setTimeout(() => {
      for (const socket of this.sockets) socket.destroy();
    }, 5000);
    await closed;
    clearTimeout(force);
    this.agent.destroy();
    this.opts.log("info", "the Chroma gate is closed", { host: this.opts.host, port: this.opts.port });
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    if (this.opts.isUp && !this.opts.isUp()) return unavailable(res, "the embedded Chroma is restarting; retry in a moment");
    const counts = mayChangeData(req.method ?? "GET", req.url ?? "/");
    const target = new URL(req.url ?? "/", this.opts.target());
    const upstream = request(target, { method: req.method, headers: { ...endToEnd(req.headers), host: target.host }, agent: this.agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, endToEnd(answer.headers));
      answer.pipe(res);
      answer.once("error", () => res.destroy());
    });
    upstream.once("error", (err) => {
      if (!res.headersSent) unavailable(res, `the embedded Chroma did not answer: ${err.message}`);
      else res.destroy();
    });
    req.once("aborted", () => upstream.destroy());
    res.once("close", () => {
      if (!res.writableFinished) upstream.destroy();
      if (counts) {
        this.writeCount++;
        this.lastWrite = new Date();
      }
    });
    req.pipe(upstream);
  }
}

function unavailable(res: ServerResponse, message: string): void {
  const body = JSON.stringify({ error: { code: "chroma_unavailable", message } });
  res.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "retry-after": "1" });
  res.end(body);
}
