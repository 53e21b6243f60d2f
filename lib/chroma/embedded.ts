import { spawn, type ChildProcess } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { resolve } from "node:path";
import { errorFields, silentLogger, type Logger } from "../log.js";
import { lockDataDir, type DataDirLock } from "./data-dir-lock.js";
import { LIFELINE_ARMED, lifelineArgs, lifelineEnv } from "./lifeline.js";
import { BINDINGS_LOADED, BINDINGS_NOT_LOADED, installedChromaBindings, launcher, type ChromaBindings } from "./launcher.js";

/**
 * The Chroma server the service runs for itself (no CHROMA_URL), supervised:
 * - it never outlives the service: a lifeline pipe (./lifeline.ts) ends it when the
 *   service dies, even by SIGKILL; it runs in a process group of its own, so a signal to
 *   the service's group (Ctrl-C, a platform's SIGTERM) does not stop it before the
 *   service's on-stop backup: the service stops it;
 * - never two on one data directory: a lock file in it (./data-dir-lock.ts);
 * - an unexpected exit is logged at error level (exit code or signal, its last output
 *   lines) and Chroma restarted on the same port with backoff (0.5 s doubling to 30 s,
 *   back to 0.5 s after a run of a minute).
 */
export interface EmbeddedChroma {
  url: string;
  port: number;
  dataDir: string;
  /** Version of the Chroma server that runs (from the bindings package that started it, not the version route); "unknown" before it started. */
  readonly version: string;
  /** true while the server answers (between a successful heartbeat and an exit). */
  readonly up: boolean;
  /** The running Chroma server's pid, null while none runs. */
  readonly pid: number | null;
  /** Resolves when the server is up (again); rejects after timeoutMs, or when stopped. */
  waitUp(timeoutMs?: number): Promise<void>;
  /** Called on every change of `up`; returns the unsubscribe function. */
  onStateChange(fn: (up: boolean, reason: string) => void): () => void;
  /** Stops the server, no restart after it; resolves once the process has exited. */
  stop(): Promise<void>;
}

export interface EmbeddedChromaOptions {
  dataDir: string;
  /** A free loopback port is picked when omitted. */
  port?: number;
  /** How long to wait for the heartbeat, at the first start and at each restart. */
  startTimeoutMs?: number;
  /** Receives the server's output lines (its banner and logs); dropped when omitted. */
  onOutput?: (line: string) => void;
  log?: Logger;
  /** Restart backoff (defaults: 500 ms doubling to 30 s, reset after 60 s up). */
  backoff?: { initialMs?: number; maxMs?: number; stableMs?: number };
  /**
   * The command that runs Node, when not this process's own binary: e.g. a newer glibc's
   * loader in front of node (`ld-linux-x86-64.so.2 --library-path DIR /usr/bin/node`, what
   * scripts/chroma-newer.sh prints before its cli.mjs), under which newer bindings load.
   */
  nodeCommand?: string[];
  /** The bindings to try, newest first (default: installedChromaBindings()). */
  bindings?: ChromaBindings[];
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

const OUTPUT_LINES_KEPT = 30;
const STOP_GRACE_MS = 5000;
/** Colour codes of Chroma's banner, kept out of the logs. */
const ANSI_ESCAPE = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

class SupervisedChroma implements EmbeddedChroma {
  readonly url: string;
  /** An own field, not a getter: test fixtures spread this object. */
  version = "unknown";
  /** Why newer bindings did not load, as last logged (logged again only when it changes). */
  private fallbackLogged = "";
  private child: ChildProcess | null = null;
  private isUp = false;
  private stopping: Promise<void> | null = null;
  private started = false;
  private upSince = 0;
  private delayMs: number;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly listeners = new Set<(up: boolean, reason: string) => void>();
  private readonly recent: string[] = [];
  private readonly log: Logger;
  private readonly backoff: { initialMs: number; maxMs: number; stableMs: number };

  constructor(
    readonly dataDir: string,
    readonly port: number,
    private readonly lock: DataDirLock,
    private readonly options: EmbeddedChromaOptions,
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.log = options.log ?? silentLogger;
    this.backoff = { initialMs: 500, maxMs: 30_000, stableMs: 60_000, ...options.backoff };
    this.delayMs = this.backoff.initialMs;
  }

  get up(): boolean {
    return this.isUp;
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  onStateChange(fn: (up: boolean, reason: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  waitUp(timeoutMs = 30_000): Promise<void> {
    if (this.isUp) return Promise.resolve();
    if (this.stopping) return Promise.reject(new Error("the embedded Chroma was stopped"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`the embedded Chroma (${this.url}) was not up within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onStateChange((up, reason) => {
        if (!up && reason !== "stopped") return;
        clearTimeout(timer);
        off();
        if (up) resolve();
        else reject(new Error("the embedded Chroma was stopped"));
      });
    });
  }

  private setUp(up: boolean, reason: string): void {
    if (this.isUp === up && up) return;
    this.isUp = up;
    if (up) this.upSince = Date.now();
    for (const fn of [...this.listeners]) {
      try {
        fn(up, reason);
      } catch (err) {
        this.log("error", "an embedded Chroma state listener failed", errorFields(err));
      }
    }
  }

  /** Starts one Chroma server process and waits for its heartbeat. */
  async launch(reason: string): Promise<void> {
    const bindings = this.options.bindings ?? installedChromaBindings();
    if (bindings.length === 0) throw new Error("could not start the embedded Chroma: no Chroma bindings package is installed for this platform");
    const start = launcher(bindings, ["run", "--path", this.dataDir, "--host", "127.0.0.1", "--port", String(this.port)]);
    const [node, ...nodeArgs] = this.options.nodeCommand ?? [process.execPath];
    const child = spawn(node!, [...nodeArgs, ...lifelineArgs(), ...start.args], {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: { ...process.env, ANONYMIZED_TELEMETRY: "False", ...lifelineEnv(), ...start.env },
    });
    child.stdin!.on("error", () => {}); // EPIPE once it has exited
    this.child = child;
    let pending = "";
    let armed = false;
    const notLoaded: string[] = [];
    const onData = (data: Buffer) => {
      pending += data.toString();
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const raw of lines) {
        const line = raw.replace(ANSI_ESCAPE, "");
        if (!line.trim()) continue;
        if (line === LIFELINE_ARMED) {
          armed = true;
          continue;
        }
        if (line.startsWith(BINDINGS_NOT_LOADED)) {
          notLoaded.push(line.slice(BINDINGS_NOT_LOADED.length)); // kept in the output too: it explains a start that fails
        }
        if (line.startsWith(BINDINGS_LOADED)) {
          this.version = line.slice(BINDINGS_LOADED.length);
          this.logFallback(this.version, notLoaded);
          continue;
        }
        this.recent.push(line);
        if (this.recent.length > OUTPUT_LINES_KEPT) this.recent.shift();
        this.options.onOutput?.(line);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let spawnError: Error | null = null;
    child.once("error", (err) => (spawnError = err));
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      this.onExit(child, code, signal);
    });
    if (child.pid) await this.lock.setChroma(child.pid, this.port).catch((err: unknown) => this.log("warn", "could not update the Chroma lock file", errorFields(err)));

    const timeoutMs = this.options.startTimeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`could not start the embedded Chroma: ${(spawnError as Error).message}`);
      if (exit) throw new Error(`the embedded Chroma exited (${describeExit(exit)}) before answering: ${this.lastOutput()}`);
      if (this.child !== child) throw new Error("the embedded Chroma was stopped while starting");
      try {
        const res = await fetch(`${this.url}/api/v2/heartbeat`, { signal: AbortSignal.timeout(1000) });
        if (res.ok) {
          await res.arrayBuffer();
          if (this.child !== child || exit) continue;
          if (!armed) this.log("error", "the embedded Chroma runs without its lifeline: it would outlive a killed service", { pid: child.pid });
          this.setUp(true, reason);
          return;
        }
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGKILL"); // its exit schedules the next attempt
    throw new Error(`the embedded Chroma did not answer ${this.url}/api/v2/heartbeat within ${timeoutMs} ms: ${this.lastOutput()}`);
  }

  /** One line when newer bindings did not load (e.g. "GLIBC_2.38' not found"): which runs instead, and why. */
  private logFallback(version: string, notLoaded: string[]): void {
    const why = notLoaded.join("; ");
    if (why === this.fallbackLogged) return;
    this.fallbackLogged = why;
    if (notLoaded.length > 0) this.log("info", `the embedded Chroma runs the ${version} bindings: newer ones did not load (${why})`, { version });
  }

  private lastOutput(): string {
    return this.recent.slice(-10).join("\n").slice(-2000);
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = null;
    const ranMs = this.isUp ? Date.now() - this.upSince : 0;
    if (this.stopping) return; // stop() reports it
    const how = describeExit({ code, signal });
    this.log("error", "the embedded Chroma exited unexpectedly", { pid: child.pid, code, signal, upForMs: ranMs, lastOutput: this.recent.slice(-10) });
    this.setUp(false, `exited (${how})`);
    if (!this.started) return; // the first start reports its own failure
    if (ranMs >= this.backoff.stableMs) this.delayMs = this.backoff.initialMs;
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.backoff.maxMs);
    this.log("info", "restarting the embedded Chroma", { inMs: delay, port: this.port });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.launch("restarted").then(
        () => this.log("info", "restarted the embedded Chroma", { url: this.url, pid: this.pid }),
        (err: unknown) => {
          if (!this.stopping) this.log("error", "restarting the embedded Chroma failed", errorFields(err));
        },
      );
    }, delay);
  }

  markStarted(): void {
    this.started = true;
  }

  stop(): Promise<void> {
    return (this.stopping ??= (async () => {
      if (this.restartTimer) clearTimeout(this.restartTimer);
      const child = this.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((r) => child.once("exit", () => r()));
        child.kill("SIGTERM");
        child.stdin?.destroy(); // the lifeline ends it too
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      this.child = null;
      this.setUp(false, "stopped");
      await this.lock.release();
    })());
  }
}

function describeExit(exit: { code: number | null; signal: NodeJS.Signals | null }): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

/**
 * Starts a real Chroma server (`chroma run` from the chromadb package) on loopback with
 * its data in `dataDir`, and resolves once its heartbeat answers; from then on it is
 * supervised (see EmbeddedChroma). Refuses (DataDirInUseError) a directory another live
 * process runs a Chroma on.
 */
export async function startEmbeddedChroma(options: EmbeddedChromaOptions): Promise<EmbeddedChroma> {
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  const lock = await lockDataDir(dataDir, options.log ?? silentLogger);
  try {
    const port = options.port ?? (await freePort());
    const chroma = new SupervisedChroma(dataDir, port, lock, options);
    try {
      await chroma.launch("started");
    } catch (err) {
      await chroma.stop();
      throw err;
    }
    chroma.markStarted();
    return chroma;
  } catch (err) {
    await lock.release();
    throw err;
  }
}
