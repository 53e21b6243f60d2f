import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, rmdir } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { ImageCorruptError, InvalidRequestError } from "../errors.js";
import { InflateError, inflateSectionAsync } from "../snapshot/codec.js";
import { mapAhead } from "../concurrency.js";
import { fetchByHash } from "../snapshot/read-chunk.js";
import { syncDir, writeFully } from "../storage/files.js";
import type { Storage } from "../storage/types.js";
import { isSafeRelativePath } from "./manifest.js";
import type { ImageChunkRef, ImageManifest } from "./types.js";

/**
 * Chunks fetched ahead of the one being written: latency-bound ~16 KiB requests, each at
 * most 64 KiB inflated. 32 rather than 8: the cold start of bench/images.ts (20,000
 * records, 9,000 chunks, fs store) spent 6.2 s downloading with 8.
 */
const READ_AHEAD = 32;
/** Pieces are gathered to this size before a write: one write per 16 KiB piece cost a syscall round trip each. */
const WRITE_BATCH = 1 << 20;

/**
 * Writes the image's files into `targetDir`, which must not exist or be empty. Everything
 * goes to a sibling temp folder first: each chunk's sha256 and size are checked before it
 * is used, a deflated one is inflated to exactly its claimed size, each file's size is
 * checked after it is written, every file and folder is fsynced, then the folder is renamed
 * into place. On any failure or abort the temp folder is removed and `targetDir` is left as
 * it was (absent or empty): nothing Chroma would start on. A damaged image: ImageCorruptError.
 *
 * `checkFileHashes` also hashes each whole file against the manifest's `sha256`. Not
 * needed to trust the bytes from storage: the manifest is checksummed (and signed when
 * keys are set), it lists each file's chunks in order, each chunk is checked against its
 * content address before use and decodes deterministically to exactly its listed size, so
 * a file that passes those checks is byte for byte the one the uploader listed. What the
 * whole-file hash adds is a check of the uploader itself (that it listed the right chunks):
 * worth its cost (sha256 of 30 MB takes 25 ms here, `npx tsx bench/verify-floor.ts`: ~125
 * ms of CPU per 150 MB) when an image is made from a previous one (build.ts), not on
 * every cold start.
 */
export async function downloadImage(
  storage: Storage,
  manifest: ImageManifest,
  targetDir: string,
  options: { signal?: AbortSignal; checkFileHashes?: boolean; onProgress?: (doneBytes: number, totalBytes: number) => void } = {},
): Promise<void> {
  const { signal } = options;
  signal?.throwIfAborted();
  const targetExists = await assertAbsentOrEmpty(targetDir);
  for (const f of manifest.files) if (!isSafeRelativePath(f.path)) throw new ImageCorruptError(`image of snapshot ${manifest.snapshot}: unsafe path ${JSON.stringify(f.path)}`, manifest.snapshot, null);
  const parent = dirname(targetDir);
  await mkdir(parent, { recursive: true });
  const tempPrefix = `.${basename(targetDir)}.image-`;
  // What a download killed half way left beside this target: never used, only in the way.
  for (const name of await readdir(parent)) if (name.startsWith(tempPrefix)) await rm(join(parent, name), { recursive: true, force: true });
  const temp = join(parent, `${tempPrefix}${randomBytes(4).toString("hex")}`);
  await mkdir(temp);
  const refs = manifest.files.flatMap((f) => f.chunks);
  const chunks = mapAhead(refs, READ_AHEAD, (ref) => fetchImageChunk(storage, manifest, ref), signal)[Symbol.asyncIterator]();
  try {
    const folders = new Set<string>([temp]);
    let done = 0;
    for (const file of manifest.files) {
      const path = join(temp, ...file.path.split("/"));
      for (let d = dirname(path); d !== temp && !folders.has(d); d = dirname(d)) folders.add(d);
      await mkdir(dirname(path), { recursive: true });
      const handle = await open(path, "wx");
      try {
        const whole = options.checkFileHashes ? createHash("sha256") : null;
        let size = 0;
        const gathered: Uint8Array[] = [];
        let gatheredBytes = 0;
        const flush = async () => {
          if (gatheredBytes === 0) return;
          await writeFully(handle, gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered, gatheredBytes));
          gathered.length = 0;
          gatheredBytes = 0;
        };
        for (let i = 0; i < file.chunks.length; i++) {
          signal?.throwIfAborted();
          const next = await chunks.next();
          if (next.done) throw new ImageCorruptError(`image of snapshot ${manifest.snapshot}: more chunks read than listed`, manifest.snapshot, null);
          const piece = next.value;
          whole?.update(piece);
          gathered.push(piece);
          gatheredBytes += piece.byteLength;
          if (gatheredBytes >= WRITE_BATCH) await flush();
          size += piece.byteLength;
          done += piece.byteLength;
          options.onProgress?.(done, manifest.bytes);
        }
        await flush();
        if (size !== file.size) throw new ImageCorruptError(`image of snapshot ${manifest.snapshot}: ${file.path} came out as ${size} bytes, the manifest says ${file.size}`, manifest.snapshot, null);
        const sum = whole?.digest("hex");
        if (sum !== undefined && sum !== file.sha256) throw new ImageCorruptError(`image of snapshot ${manifest.snapshot}: ${file.path} came out with sha256 ${sum}, the manifest says ${file.sha256} (the image's chunks are intact: it was made wrong)`, manifest.snapshot, null);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    for (const folder of folders) await syncDir(folder);
    signal?.throwIfAborted();
    if (targetExists) await rmdir(targetDir); // empty, checked above
    await rename(temp, targetDir);
    await syncDir(parent);
  } catch (err) {
    void chunks.return(undefined); // fetches in flight finish unobserved
    await rm(temp, { recursive: true, force: true });
    throw err;
  }
}

/** True when it exists (an empty folder); InvalidRequestError when it holds anything or is not a folder. */
async function assertAbsentOrEmpty(dir: string): Promise<boolean> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return false;
    if (code === "ENOTDIR") throw new InvalidRequestError(`image download: ${dir} is not a folder`);
    throw err;
  }
  if (names.length > 0) throw new InvalidRequestError(`image download: ${dir} is not empty (${names.length} entries): an image is only placed into an empty data directory`);
  return true;
}

/** One chunk of the image: present, exactly its size, hashing to its name (fetchByHash); a deflated one inflated to exactly its claimed size. */
async function fetchImageChunk(storage: Storage, manifest: ImageManifest, ref: ImageChunkRef): Promise<Uint8Array> {
  const corrupt = (why: string, cause?: unknown) => new ImageCorruptError(`image of snapshot ${manifest.snapshot}: chunk ${ref.hash} ${why}`, manifest.snapshot, ref.hash, { cause });
  const stored = await fetchByHash(storage, ref);
  if (!(stored instanceof Uint8Array)) throw corrupt(stored.problem);
  if (ref.codec === "raw") {
    if (stored.byteLength !== ref.size) throw corrupt(`is stored raw as ${stored.byteLength} bytes, the manifest says ${ref.size}`);
    return stored;
  }
  try {
    return await inflateSectionAsync(stored, ref.size, { handOver: true, offThread: true });
  } catch (err) {
    if (err instanceof InflateError) throw corrupt(err.message, err);
    throw err;
  }
}


