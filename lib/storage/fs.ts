import { randomBytes } from "node:crypto";
import { link, mkdir, open, opendir, readdir, rename, rm, stat, statfs, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { notFound, StorageError, type StorageOperation } from "./errors.js";
import { assertValidKey, assertValidPrefix } from "./keys.js";
import { syncDir, writeFully } from "./files.js";
import type { ObjectInfo, Storage } from "./types.js";

/** Where writes in progress live; on the same filesystem as the root, so rename is atomic. */
const PARTIAL_DIR = ".partial";
const STALE_TEMP_MS = 60 * 60 * 1000;

/**
 * Objects as files under `root`. A write goes to a temp file, is fsynced, then renamed
 * into place (litestream's file replica): a crash never leaves a half-written object
 * under its real name. A key and a longer key that uses it as a folder (`a` and `a/b`)
 * cannot both exist, as on any filesystem.
 */
/** Files up to this size are read whole by `get` (memory stays bounded by it). */
const WHOLE_READ_MAX = 16 * 1024 * 1024;

export function fsStorage(root: string): Storage {
  const driver = "fs";

  function pathOf(operation: StorageOperation, key: string): string {
    assertValidKey(driver, operation, key);
    if (key === PARTIAL_DIR || key.startsWith(`${PARTIAL_DIR}/`)) {
      throw new StorageError(`fs: invalid key ${JSON.stringify(key)}: ${PARTIAL_DIR}/ is reserved for writes in progress`, {
        driver,
        operation,
        key,
        kind: "invalid_key",
        status: 400,
      });
    }
    return join(root, ...key.split("/"));
  }

  function fail(operation: StorageOperation, key: string, err: unknown): never {
    if (err instanceof StorageError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && (operation === "get" || operation === "head")) throw notFound(driver, operation, key);
    throw new StorageError(`fs: ${operation} "${key}" failed: ${(err as Error).message}`, {
      driver,
      operation,
      key,
      kind: code === "ENOSPC" || code === "EDQUOT" ? "full" : code === "EACCES" || code === "EROFS" ? "unavailable" : "failed",
      cause: err,
    });
  }

  /** The error for a write the disk had no room for, with what was written and what is free. */
  async function diskFull(operation: StorageOperation, key: string, err: unknown, written: number, needed: number): Promise<StorageError> {
    const free = await statfs(root).then(
      (s) => `${s.bavail * s.bsize} bytes free`,
      () => "free space unknown",
    );
    const code = (err as NodeJS.ErrnoException).code;
    return new StorageError(
      `fs: ${operation} "${key}" failed: no space left on the volume of ${root} (${code}): wrote ${written} of ${needed} bytes, ${free}; nothing was kept under the key`,
      { driver, operation, key, kind: "full", cause: err },
    );
  }

  let staleSwept: Promise<void> | null = null;

  /**
   * Removes temp files a killed process left behind. Only ones older than an hour: a
   * younger one may be another process's write in progress.
   */
  async function sweepStaleTemps(dir: string): Promise<void> {
    const cutoff = Date.now() - STALE_TEMP_MS;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const path = join(dir, name);
      const info = await stat(path).catch(() => null);
      if (info && info.mtimeMs < cutoff) await rm(path, { force: true });
    }
  }

  /**
   * Writes the bytes into a fsynced temp file and returns its path; removes it on failure.
   * Every write is checked for its count: a write into a full tmpfs can resolve short
   * without an error, so the rest is written again, and a write that makes no progress is
   * a full disk. The file's size is checked against the bytes written before it is used.
   */
  async function writeTemp(operation: StorageOperation, key: string, bytes: Uint8Array): Promise<string> {
    const dir = join(root, PARTIAL_DIR);
    await mkdir(dir, { recursive: true });
    await (staleSwept ??= sweepStaleTemps(dir));
    const tmp = join(dir, `${Date.now()}-${randomBytes(6).toString("hex")}`);
    const handle = await open(tmp, "wx", 0o644);
    const progress = { written: 0 };
    try {
      await writeFully(handle, bytes, progress);
      await handle.sync();
      const { size } = await handle.stat();
      if (size !== progress.written) throw new Error(`the temp file holds ${size} bytes, ${progress.written} were written`);
      await handle.close();
    } catch (err) {
      await handle.close().catch(() => {});
      await rm(tmp, { force: true });
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOSPC" || code === "EDQUOT") throw await diskFull(operation, key, err, progress.written, bytes.byteLength);
      throw err;
    }
    return tmp;
  }

  async function* walk(dir: string, keyPrefix: string): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      entries = await opendir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      // A key used as a folder holds nothing; a root that is not a directory is a broken store, not an empty one.
      if (code === "ENOTDIR" && (await stat(root).then((s) => s.isDirectory(), () => false))) return;
      throw err;
    }
    for await (const entry of entries) {
      if (keyPrefix === "" && entry.name === PARTIAL_DIR) continue;
      const key = keyPrefix + entry.name;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        yield* walk(path, `${key}/`);
      } else if (entry.isFile()) {
        const info = await stat(path).catch(() => null); // deleted while listing: skip
        if (info) yield { key, size: info.size, lastModified: info.mtime };
      }
    }
  }

  return {
    driver,
    capabilities: { atomicPutIfAbsent: true },

    async put(key, bytes) {
      const path = pathOf("put", key);
      try {
        const tmp = await writeTemp("put", key, bytes);
        try {
          await mkdir(dirname(path), { recursive: true });
          await rename(tmp, path);
        } catch (err) {
          await rm(tmp, { force: true });
          throw err;
        }
        await syncDir(dirname(path));
      } catch (err) {
        fail("put", key, err);
      }
    },

    async putIfAbsent(key, bytes) {
      const path = pathOf("putIfAbsent", key);
      try {
        await stat(path);
        return false;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") fail("putIfAbsent", key, err);
      }
      try {
        const tmp = await writeTemp("putIfAbsent", key, bytes);
        try {
          await mkdir(dirname(path), { recursive: true });
          // link(2) fails with EEXIST when the name is taken: the atomic "if absent",
          // and the object appears complete, like rename.
          await link(tmp, path);
          await syncDir(dirname(path));
          return true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
          throw err;
        } finally {
          await unlink(tmp).catch(() => {});
        }
      } catch (err) {
        fail("putIfAbsent", key, err);
      }
    },

    async get(key) {
      const path = pathOf("get", key);
      try {
        const handle = await open(path, "r");
        const { size } = await handle.stat();
        if (size <= WHOLE_READ_MAX) {
          // A chunk-sized file in one read: far less overhead than a stream of 256 KiB reads.
          let bytes: Uint8Array;
          try {
            const buffer = await handle.readFile();
            bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
          } finally {
            await handle.close();
          }
          return new ReadableStream<Uint8Array>({
            start(controller) {
              if (bytes.byteLength > 0) controller.enqueue(bytes);
              controller.close();
            },
          });
        }
        const nodeStream = handle.createReadStream({ highWaterMark: 256 * 1024 });
        return Readable.toWeb(nodeStream) as unknown as ReadableStream<Uint8Array>;
      } catch (err) {
        fail("get", key, err);
      }
    },

    async head(key) {
      const path = pathOf("head", key);
      try {
        const info = await stat(path);
        if (!info.isFile()) throw Object.assign(new Error("not a file"), { code: "ENOENT" });
        return { size: info.size, lastModified: info.mtime };
      } catch (err) {
        fail("head", key, err);
      }
    },

    async *list(prefix) {
      assertValidPrefix(driver, prefix);
      // Walk only the deepest folder the prefix names in full, then filter by the rest.
      const slash = prefix.lastIndexOf("/");
      const folder = slash < 0 ? "" : prefix.slice(0, slash + 1);
      const start = folder === "" ? root : join(root, ...folder.slice(0, -1).split("/"));
      try {
        for await (const info of walk(start, folder)) {
          if (info.key.startsWith(prefix)) yield info;
        }
      } catch (err) {
        fail("list", prefix, err);
      }
    },

    async delete(key) {
      const path = pathOf("delete", key);
      try {
        await unlink(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") fail("delete", key, err);
      }
    },
  };
}
