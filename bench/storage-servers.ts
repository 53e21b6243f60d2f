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
import type * as NodeCrypto from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startGcsServer } from "../test/fixtures/gcs-server.js";

const S3_BUCKET = "bench";

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  resetOnClose: boolean;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

const require = createRequire(import.meta.url);

/**
 * s3rver 3.7.1 encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3
 * (Node 17+) only has in its legacy provider. Triple DES with three equal keys is single
 * DES, so its "des" calls go to "des-ede3-cbc" (as in test/storage/s3.test.ts). The bench
 * does not list, but the server should behave as in the tests.
 */
function shimSingleDes(): void {
  const crypto = require("node:crypto") as typeof NodeCrypto;
  const { createCipheriv, createDecipheriv } = crypto;
  const triple = (algorithm: string, key: Buffer) => (algorithm === "des" ? ["des-ede3-cbc", Buffer.concat([key, key, key])] : [algorithm, key]);
  Object.assign(crypto, {
    createCipheriv: (algorithm: string, key: Buffer, iv: Buffer) => createCipheriv(...(triple(algorithm, key) as [string, Buffer]), iv),
    createDecipheriv: (algorithm: string, key: Buffer, iv: Buffer) => createDecipheriv(...(triple(algorithm, key) as [string, Buffer]), iv),
  });
}

async function main(): Promise<void> {
  const kind = process.argv[2];
  let url: string;
  let close: () => Promise<void>;
  if (kind === "gcs") {
    const server = await startGcsServer();
    url = server.url;
    close = () => server.close();
  } else if (kind === "s3") {
    shimSingleDes();
    const S3rver = require("s3rver") as S3rverConstructor;
    const directory = await mkdtemp(join(tmpdir(), "bench-s3rver-"));
    const server = new S3rver({
      address: "127.0.0.1",
      port: 0,
      silent: true,
      directory,
      resetOnClose: true,
      configureBuckets: [{ name: S3_BUCKET }],
    });
    const { port } = await server.run();
    url = `http://127.0.0.1:${port}`;
    close = async () => {
      await server.close().catch(() => {});
      await rm(directory, { recursive: true, force: true });
    };
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
