/**
 * A stand-in for the service in test/chroma/supervisor.test.ts: starts the embedded Chroma
 * on argv[2], prints `{"pid", "chromaPid", "url"}` on one line, then waits to be killed.
 */
import { startEmbeddedChroma } from "../../lib/chroma/embedded.js";

const chroma = await startEmbeddedChroma({ dataDir: process.argv[2]! });
process.stdout.write(JSON.stringify({ pid: process.pid, chromaPid: chroma.pid, url: chroma.url }) + "\n");
setInterval(() => {}, 60_000);
