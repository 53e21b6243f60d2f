import { spawn, type ChildProcess } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { dirname, join } from "node:path";

export interface EmbeddedChroma {
  url: string;
  port: number;
  dataDir: string;
  /** Stops the server; resolves once the process has exited. */
  stop(): Promise<void>;
}

export interface EmbeddedChromaOptions {
  dataDir: string;
  /** A free loopback port is picked when omitted. */
  port?: number;
  /** How long to wait for the heartbeat. */
  startTimeoutMs?: number;
  /** Receives the server's output lines (its banner and logs); dropped when omitted. */
  onOutput?: (line: string) => void;
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

/** The `chroma` CLI shipped in the chromadb package (a Rust server behind a Node binding). */
function chromaCliPath(): string {
  // The package exports only its entry (dist/cjs/chromadb.cjs); the CLI sits beside it.
  const entry = createRequire(import.meta.url).resolve("chromadb");
  return join(dirname(entry), "..", "cli.mjs");
}

async function waitForHeartbeat(url: string, child: ChildProcess, timeoutMs: number, output: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`embedded Chroma exited (${child.exitCode ?? child.signalCode}) before answering: ${output().slice(-2000)}`);
    }
    try {
      const res = await fetch(`${url}/api/v2/heartbeat`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`embedded Chroma did not answer ${url}/api/v2/heartbeat within ${timeoutMs} ms: ${output().slice(-2000)}`);
}

/**
 * Starts a real Chroma server (`chroma run` from the chromadb package) on loopback with
 * its data in `dataDir`, and resolves once its heartbeat answers.
 */
export async function startEmbeddedChroma(options: EmbeddedChromaOptions): Promise<EmbeddedChroma> {
  await mkdir(options.dataDir, { recursive: true });
  const port = options.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    process.execPath,
    [chromaCliPath(), "run", "--path", options.dataDir, "--host", "127.0.0.1", "--port", String(port)],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ANONYMIZED_TELEMETRY: "False" } },
  );
  let recent = "";
  const onData = (data: Buffer) => {
    const s = data.toString();
    recent = (recent + s).slice(-8000);
    if (options.onOutput) for (const line of s.split("\n")) if (line.trim()) options.onOutput(line);
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    await waitForHeartbeat(url, child, options.startTimeoutMs ?? 30_000, () => recent);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, port, dataDir: options.dataDir, stop };
}
