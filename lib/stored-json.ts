/** Small JSON records the service keeps in the store next to the snapshots, each with a SHA-256 of its body. */
import type { Logger } from "./log.js";
import { isNotFound } from "./storage/errors.js";
import { readAll, sha256Hex } from "./storage/streams.js";
import type { Storage } from "./storage/types.js";

const textSha256 = (text: string) => sha256Hex(new TextEncoder().encode(text));

export async function writeJsonRecord(storage: Storage, key: string, value: object): Promise<void> {
  const body = JSON.stringify(value);
  await storage.put(key, new TextEncoder().encode(JSON.stringify({ sha256: await textSha256(body), body })));
}

/** The record at `key`; null when absent, or damaged (then logged at warn: it is never trusted). */
export async function readJsonRecord<T>(storage: Storage, key: string, log?: Logger): Promise<T | null> {
  let text: string;
  try {
    text = new TextDecoder().decode(await readAll(await storage.get(key), 4 * 1024 * 1024));
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  try {
    const wrapper = JSON.parse(text) as { sha256?: unknown; body?: unknown };
    if (typeof wrapper.body !== "string" || wrapper.sha256 !== (await textSha256(wrapper.body))) throw new Error("checksum mismatch");
    return JSON.parse(wrapper.body) as T;
  } catch (err) {
    log?.("warn", `ignored a damaged record in the store: ${key}`, { key, error: (err as Error).message });
    return null;
  }
}
