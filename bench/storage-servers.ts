/**
 * Starts one storage test server in this process, for `bench/storage-rss.ts`, so that the
 * server's memory (the GCS test server keeps objects in memory) is never counted against
 * the driver being measured.
 *
 *   node --import tsx bench/storage-servers.ts gcs|s3
 *
 * Prints one JSON line on stdout once listening: `{"url":"http://127.0.0.1:<port>"}`
 * (for s3, also the bucket name). Runs until stdin closes or SIGTERM/SIGINT arrives,
 * then closes the server and removes its temp directory.
 */
import { startGcsServer } from "../test/fixtures/gcs-server.js";
import { startS3rver } from "../test/fixtures/s3rver.js";

const S3_BUCKET = "bench";

async function main(): Promise<void> {
  const kind = process.argv[2];
  let url: string;
  let close: () => Promise<void>;
  if (kind === "gcs") {
    const server = await startGcsServer();
    url = server.url;
    close = () => server.close();
  } else if (kind === "s3") {
    const server = await startS3rver([S3_BUCKET]);
    url = server.endpoint;
    close = () => server.close();
  } else {
    console.error("usage: node --import tsx bench/storage-servers.ts gcs|s3");
    process.exit(2);
  }

  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    await close().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown());
  process.on("SIGINT", () => void shutdown());
  // The parent holds our stdin: when it goes away (even killed), so do we.
  process.stdin.on("end", () => void shutdown());
  process.stdin.on("close", () => void shutdown());
  process.stdin.resume();

  process.stdout.write(`${JSON.stringify({ url, ...(kind === "s3" ? { bucket: S3_BUCKET } : {}) })}\n`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
