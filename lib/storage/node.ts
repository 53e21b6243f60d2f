import type { Config } from "../config.js";
import { InvalidRequestError } from "../errors.js";
import type { Logger } from "../log.js";
import { fsStorage } from "./fs.js";
import { memoryStorage } from "./memory.js";
import { withPrefix } from "./prefixed.js";
import { retryingStorage } from "./retry.js";
import type { Storage } from "./types.js";

/**
 * The store the Node runtime uses, from configuration: the driver, under the one retry
 * layer (retryingStorage, with STORAGE_TIMEOUT), with `STORAGE_PREFIX` applied.
 * The cloud drivers are loaded only when chosen: the replit one pulls in the whole GCS
 * client, about a second of start-up for every CLI call that does not need it.
 */
export async function storageFromConfig(config: Config["storage"], options: { log?: Logger } = {}): Promise<Storage> {
  let storage: Storage;
  switch (config.driver) {
    case "fs":
      storage = fsStorage(config.backupDir);
      break;
    case "memory":
      storage = memoryStorage();
      break;
    case "replit":
      storage = (await import("./replit.js")).replitStorage({ bucketId: config.replitBucketId });
      break;
    case "s3":
      storage = (await import("./s3.js")).s3Storage({ ...config.s3!, timeoutMs: config.timeoutMs });
      break;
    case "r2":
      throw new InvalidRequestError("configuration: STORAGE=r2 works only on Cloudflare Workers (an R2 binding); use STORAGE=s3 with R2's S3 endpoint from Node");
  }
  return withPrefix(retryingStorage(storage, { timeoutMs: config.timeoutMs, log: options.log }), config.prefix);
}
