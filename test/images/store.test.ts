import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:net";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEmbeddedChroma } from "../../lib/chroma/embedded.js";
import { ImageCorruptError, InvalidRequestError, NotFoundError } from "../../lib/errors.js";
import { serializeImageManifest } from "../../lib/images/manifest.js";
import { downloadImage, listImages, pickImage, readImage, uploadImage } from "../../lib/images/store.js";
import type { ImageManifest } from "../../lib/images/types.js";
import { chunkKey, sha256Hex } from "../../lib/snapshot/chunk.js";
import { ManifestKeys } from "../../lib/snapshot/signing.js";
import { fsStorage } from "../../lib/storage/fs.js";
import { memoryStorage } from "../../lib/storage/memory.js";
import { readAll } from "../../lib/storage/streams.js";
import { s3Storage } from "../../lib/storage/s3.js";
import type { Storage } from "../../lib/storage/types.js";
import { addRecords, collectionId, createCollection, dumpCollection, makeRecords } from "../fixtures/dataset.js";
import { startS3rver } from "../fixtures/s3rver.js";
import { mountTmpfs } from "../fixtures/tmpfs.js";

const SNAP_A = "20261201T000000Z-0001";
const SNAP_B = "20261202T000000Z-0002";
const SNAP_C = "20261203T000000Z-0003";

let work: string;
/** A real Chroma data directory (Chroma stopped), and what its collection returned while it ran. */
let chromaDir: string;
let dumped: string;
let chromaVersion: string;

/** Damages a stored chunk in place: byte `at` XOR `mask`. */
async function flipBits(storage: Storage, hash: string, at: number, mask: number): Promise<void> {
  const bytes = await readAll(await storage.get(chunkKey(hash)));
  bytes[at] = bytes[at]! ^ mask;
  await storage.put(chunkKey(hash), bytes);
}

/** The download fails with ImageCorruptError naming `hash`, and leaves nothing in `parent`. */
async function expectRefusedFor(hash: string, download: Promise<void>, parent: string): Promise<void> {
  const err = await download.catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ImageCorruptError);
  expect((err as ImageCorruptError).chunk).toBe(hash);
  expect(await readdir(parent)).toEqual([]);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "images-store-"));
  chromaDir = join(work, "chroma");
  const chroma = await startEmbeddedChroma({ dataDir: chromaDir });
  chromaVersion = chroma.version;
  try {
    await createCollection(chroma.url, "notes", `{"hnsw":{"space":"l2"}}`);
    const id = await collectionId(chroma.url, "notes");
    await addRecords(chroma.url, id, makeRecords(1500, 32, 11));
    dumped = await dumpCollection(chroma.url, id);
  } finally {
    await chroma.stop();
  }
}, 120_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const meta = (snapshot: string) => ({ snapshot, chromaVersion, collections: [{ name: "notes", records: 1500, sampleIds: ["rec-0"] }] });

/** A dump with metadata keys sorted (Chroma returns them in a different order from one call to the next). */
function canonical(dump: string): string {
  const sortKeys = (value: unknown): unknown =>
    value && typeof value === "object" && !Array.isArray(value) ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, sortKeys(v)])) : Array.isArray(value) ? value.map(sortKeys) : value;
  return JSON.stringify(sortKeys(JSON.parse(dump)));
}

/** Each file's sha256 by relative path. */
async function filesOf(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) out.set(join(entry.parentPath, entry.name).slice(dir.length + 1), sha256Hex(await readFile(join(entry.parentPath, entry.name))));
  }
  return out;
}

describe("restore images of a real Chroma data directory", () => {
  it("round-trips through the fs store: Chroma started on the download returns every record as before", async () => {
    const storage = fsStorage(join(work, "store-fs"));
    const { manifest, uploadedBytes, reusedBytes } = await uploadImage(storage, chromaDir, meta(SNAP_A));
    expect(manifest.files.some((f) => f.path === "chroma.sqlite3")).toBe(true);
    expect(uploadedBytes).toBeGreaterThan(0);
    expect(uploadedBytes + reusedBytes).toBe(manifest.storedBytes);
    expect(await readImage(storage, SNAP_A)).toEqual(manifest);

    const target = join(work, "restored-fs", "data");
    await downloadImage(storage, await readImage(storage, SNAP_A), target);
    expect(await filesOf(target)).toEqual(await filesOf(chromaDir));
    const chroma = await startEmbeddedChroma({ dataDir: target });
    try {
      const id = await collectionId(chroma.url, "notes");
      expect(canonical(await dumpCollection(chroma.url, id)) === canonical(dumped)).toBe(true);
    } finally {
      await chroma.stop();
    }
  }, 120_000);

  it("round-trips through a real S3 server (s3rver): the same files come back", async () => {
    const server = await startS3rver(["images"]);
    try {
      const storage = s3Storage({ endpoint: server.endpoint, bucket: "images", accessKeyId: "S3RVER", secretAccessKey: "S3RVER" });
      const { manifest } = await uploadImage(storage, chromaDir, meta(SNAP_A));
      const target = join(work, "restored-s3");
      await downloadImage(storage, await readImage(storage, SNAP_A), target);
      expect(await filesOf(target)).toEqual(await filesOf(chromaDir));
      expect((await uploadImage(storage, chromaDir, meta(SNAP_B))).reusedBytes).toBe(manifest.storedBytes);
    } finally {
      await server.close();
    }
  }, 60_000);

  it("a second image of the same files uploads nothing; a small change uploads a few chunks", async () => {
    const storage = memoryStorage();
    const first = await uploadImage(storage, chromaDir, meta(SNAP_A));
    const again = await uploadImage(storage, chromaDir, meta(SNAP_B));
    expect(again.uploadedBytes).toBe(0);
    expect(again.reusedBytes).toBe(first.manifest.storedBytes);

    const copy = join(work, "changed");
    await downloadImage(storage, again.manifest, copy);
    const sqlite = join(copy, "chroma.sqlite3");
    const bytes = await readFile(sqlite);
    bytes.write("changed in place", 200_000);
    await writeFile(sqlite, bytes);
    const changed = await uploadImage(storage, copy, meta(SNAP_C));
    expect(changed.uploadedBytes).toBeGreaterThan(0);
    expect(changed.uploadedBytes).toBeLessThan(changed.manifest.storedBytes * 0.05);
  }, 60_000);

  it("leaves out the lock file and sockets, stores in-folder symlinks as files, refuses one that leads out", async () => {
    const dir = join(work, "odd");
    await mkdir(join(dir, "seg"), { recursive: true });
    await writeFile(join(dir, ".chroma-backup.pid"), '{"pid":1}');
    await writeFile(join(dir, "seg", "a.bin"), "a");
    await symlink(join(dir, "seg", "a.bin"), join(dir, "link"));
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir, "s.sock"), resolve));
    try {
      const storage = memoryStorage();
      const { manifest } = await uploadImage(storage, dir, meta(SNAP_A));
      expect(manifest.files.map((f) => f.path)).toEqual(["link", "seg/a.bin"]);
      await symlink(tmpdir(), join(dir, "out"));
      await expect(uploadImage(storage, dir, meta(SNAP_B))).rejects.toThrow(InvalidRequestError);
      await expect(readImage(storage, SNAP_B)).rejects.toThrow(NotFoundError);
    } finally {
      server.close();
    }
  });

  describe("a download that fails leaves nothing Chroma would start on", () => {
    let storage: Storage;
    let manifest: ImageManifest;
    beforeAll(async () => {
      storage = memoryStorage();
      manifest = (await uploadImage(storage, chromaDir, meta(SNAP_A))).manifest;
    });

    it("a damaged chunk: ImageCorruptError naming it, target absent, no temp folder left", async () => {
      const damaged = memoryStorage();
      for await (const info of storage.list("")) await damaged.put(info.key, await readAll(await storage.get(info.key)));
      const victim = manifest.files.find((f) => f.path === "chroma.sqlite3")!.chunks[3]!;
      await flipBits(damaged, victim.hash, 10, 0xff);
      const parent = join(work, "damaged");
      await expectRefusedFor(victim.hash, downloadImage(damaged, manifest, join(parent, "data")), parent);

      await damaged.delete(chunkKey(victim.hash));
      await expect(downloadImage(damaged, manifest, join(parent, "data"))).rejects.toThrow(/missing from the store/);
      expect(await readdir(parent)).toEqual([]);
    });

    it("an abort half way: target absent (an empty target stays empty)", async () => {
      const parent = join(work, "aborted");
      await mkdir(join(parent, "data"), { recursive: true });
      const abort = new AbortController();
      const err = await downloadImage(storage, manifest, join(parent, "data"), {
        signal: abort.signal,
        onProgress: (done, total) => {
          if (done > total / 2) abort.abort(new Error("stop"));
        },
      }).catch((e: unknown) => e);
      expect((err as Error).message).toBe("stop");
      expect(await readdir(parent)).toEqual(["data"]);
      expect(await readdir(join(parent, "data"))).toEqual([]);
    });

    it("clears what a download killed half way left beside the target", async () => {
      const parent = join(work, "killed");
      await mkdir(join(parent, ".data.image-0badf00d", "seg"), { recursive: true });
      await writeFile(join(parent, ".data.image-0badf00d", "seg", "half"), "x");
      await writeFile(join(parent, "unrelated"), "kept");
      await downloadImage(storage, manifest, join(parent, "data"));
      expect((await readdir(parent)).sort()).toEqual(["data", "unrelated"]);
    });

    it("refuses a target that holds anything", async () => {
      const target = join(work, "full-target");
      await mkdir(target, { recursive: true });
      await writeFile(join(target, "x"), "x");
      await expect(downloadImage(storage, manifest, target)).rejects.toThrow(InvalidRequestError);
    });

    it("a disk that fills up: the write error, target absent", async () => {
      const volume = await mountTmpfs(manifest.bytes / 2);
      if (typeof volume === "string") {
        console.log(`skipped: ${volume}`);
        return;
      }
      try {
        await expect(downloadImage(storage, manifest, join(volume.dir, "data"))).rejects.toThrow(/ENOSPC|no space/i);
        expect(await readdir(volume.dir)).toEqual([]);
      } finally {
        await volume.unmount();
      }
    });
  });
});

describe("image manifests", () => {
  it("are listed newest first and picked by Chroma version and snapshot", async () => {
    const storage = memoryStorage();
    const dir = join(work, "small");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "f"), "content");
    await uploadImage(storage, dir, { ...meta(SNAP_A), chromaVersion: "1.0.5" });
    await uploadImage(storage, dir, { ...meta(SNAP_B), chromaVersion: "1.3.4" });
    await uploadImage(storage, dir, { ...meta(SNAP_C), chromaVersion: "1.0.5" });
    const images = await listImages(storage);
    expect(images.map((m) => m.snapshot)).toEqual([SNAP_C, SNAP_B, SNAP_A]);
    expect(pickImage(images, { chromaVersion: "1.0.5", atOrBefore: SNAP_C })?.snapshot).toBe(SNAP_C);
    expect(pickImage(images, { chromaVersion: "1.0.5", atOrBefore: SNAP_B })?.snapshot).toBe(SNAP_A);
    expect(pickImage(images, { chromaVersion: "1.3.4", atOrBefore: SNAP_A })).toBeNull();
    expect(pickImage(images, { chromaVersion: "9.9.9", atOrBefore: SNAP_C })).toBeNull();
  });

  it("a damaged or unsigned manifest is refused (ImageCorruptError) and left out of the list", async () => {
    const storage = memoryStorage();
    const dir = join(work, "small2");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "f"), "content");
    const keys = new ManifestKeys(["k".repeat(40)]);
    await uploadImage(storage, dir, meta(SNAP_A), { keys });
    await uploadImage(storage, dir, meta(SNAP_B));
    expect((await readImage(storage, SNAP_A, keys)).snapshot).toBe(SNAP_A);
    await expect(readImage(storage, SNAP_B, keys)).rejects.toThrow(/not signed/);
    const text = new TextDecoder().decode(await readAll(await storage.get(`images/${SNAP_A}.json`)));
    await storage.put(`images/${SNAP_A}.json`, new TextEncoder().encode(text.replace('"bytes":7', '"bytes":8')));
    await expect(readImage(storage, SNAP_A)).rejects.toThrow(ImageCorruptError);
    expect((await listImages(storage)).map((m) => m.snapshot)).toEqual([SNAP_B]);

    // A path that leads out of the data directory never reaches the disk, checksum or not.
    const good = await readImage(storage, SNAP_B);
    const forged: ImageManifest = { ...good, files: [{ ...good.files[0]!, path: "../escape" }] };
    await storage.put(`images/${SNAP_B}.json`, serializeImageManifest(forged));
    await expect(readImage(storage, SNAP_B)).rejects.toThrow(/unexpected shape/);
    await expect(downloadImage(storage, forged, join(work, "escape", "data"))).rejects.toThrow(ImageCorruptError);
    await expect(readdir(join(work, "escape"))).rejects.toThrow(/ENOENT/);
  });
});

describe("image format 2: chunks that deflate poorly are stored raw", () => {
  let dir: string;
  beforeAll(async () => {
    dir = join(work, "mixed");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "noise.bin"), randomBytes(200_000)); // deflate keeps ~100%
    await writeFile(join(dir, "text.txt"), "the same line again\n".repeat(20_000)); // deflate keeps ~0.5%
  });

  it("stores each chunk raw or deflated by what deflate saved, and both come back byte for byte", async () => {
    const storage = memoryStorage();
    const { manifest } = await uploadImage(storage, dir, meta(SNAP_A));
    expect(manifest.formatVersion).toBe(2);
    const noise = manifest.files.find((f) => f.path === "noise.bin")!.chunks;
    const text = manifest.files.find((f) => f.path === "text.txt")!.chunks;
    expect(noise.every((c) => c.codec === "raw" && c.bytes === c.size)).toBe(true);
    expect(text.every((c) => c.codec === undefined && c.bytes < c.size / 10)).toBe(true);
    const read = await readImage(storage, SNAP_A);
    expect(read.files.find((f) => f.path === "noise.bin")!.chunks[0]!.codec).toBe("raw");
    const target = join(work, "mixed-restored");
    await downloadImage(storage, read, target);
    expect(await filesOf(target)).toEqual(await filesOf(dir));
  });

  it("a damaged raw chunk is refused like a deflated one: ImageCorruptError naming it, nothing placed", async () => {
    const storage = memoryStorage();
    const { manifest } = await uploadImage(storage, dir, meta(SNAP_A));
    const victim = manifest.files.find((f) => f.path === "noise.bin")!.chunks[1]!;
    await flipBits(storage, victim.hash, 100, 0x01);
    const parent = join(work, "raw-damaged");
    await expectRefusedFor(victim.hash, downloadImage(storage, manifest, join(parent, "data")), parent);
  });

  it("refuses a raw chunk whose stored size is not its size, and a format 1 manifest that marks one raw", async () => {
    const storage = memoryStorage();
    const { manifest } = await uploadImage(storage, dir, meta(SNAP_A));
    const bend = (change: (m: ImageManifest) => ImageManifest) => storage.put(`images/${SNAP_A}.json`, serializeImageManifest(change(structuredClone(manifest))));
    await bend((m) => {
      const c = m.files.find((f) => f.path === "text.txt")!.chunks[0]!;
      c.codec = "raw"; // its stored bytes are deflate: read raw, they would be garbage of the wrong size
      return m;
    });
    await expect(readImage(storage, SNAP_A)).rejects.toThrow(/raw chunk .* stores \d+ bytes of \d+/);
    await bend((m) => ({ ...m, formatVersion: 1 }));
    await expect(readImage(storage, SNAP_A)).rejects.toThrow(/format 1 and marks chunk/);
  });

  it("a format 1 image (every chunk deflated, as images made before) still reads and downloads", async () => {
    const storage = memoryStorage();
    const textOnly = join(work, "text-only");
    await mkdir(textOnly, { recursive: true });
    await writeFile(join(textOnly, "text.txt"), "the same line again\n".repeat(20_000));
    const { manifest } = await uploadImage(storage, textOnly, meta(SNAP_A));
    expect(manifest.files.flatMap((f) => f.chunks).some((c) => c.codec !== undefined)).toBe(false);
    await storage.put(`images/${SNAP_A}.json`, serializeImageManifest({ ...manifest, formatVersion: 1 }));
    const read = await readImage(storage, SNAP_A);
    expect(read.formatVersion).toBe(1);
    const target = join(work, "format-1-restored");
    await downloadImage(storage, read, target);
    expect(await filesOf(target)).toEqual(await filesOf(textOnly));
  });

  it("checkFileHashes catches an image that lists the wrong chunks (each intact), which the chunk checks cannot", async () => {
    const storage = memoryStorage();
    const { manifest } = await uploadImage(storage, dir, meta(SNAP_A));
    const forged = structuredClone(manifest);
    // Its first two chunks swapped: each passes its own checks, the file's size adds up, its content is wrong.
    const chunks = forged.files.find((f) => f.path === "noise.bin")!.chunks;
    expect(chunks.length).toBeGreaterThan(2);
    [chunks[0], chunks[1]] = [chunks[1]!, chunks[0]!];
    const parent = join(work, "wrong-chunks");
    const err = await downloadImage(storage, forged, join(parent, "data"), { checkFileHashes: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageCorruptError);
    expect((err as Error).message).toMatch(/noise\.bin came out with sha256 .* it was made wrong/);
    expect(await readdir(parent)).toEqual([]);
    // Without it (the cold start) the chunk checks pass: what the option adds is a check of the image's making.
    await downloadImage(storage, forged, join(parent, "data"));
  });
});
