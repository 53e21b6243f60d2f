import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { fsStorage } from "../../lib/storage/fs.js";
import { mountTmpfs } from "../fixtures/tmpfs.js";
import { storageConformance } from "./conformance.js";

/**
 * A real tmpfs of `bytes`: a write past it resolves short and then fails with ENOSPC, in
 * the middle of the body, which is both faults of the suite at once.
 */
async function smallDisk(bytes: number) {
  const disk = await mountTmpfs(bytes);
  if (typeof disk === "string") return disk;
  return { storage: fsStorage(disk.dir), kind: "full" as const, cleanup: () => disk.unmount() };
}

storageConformance({
  name: "fs",
  create: async () => {
    const root = await mkdtemp(join(tmpdir(), "storage-fs-"));
    return { storage: fsStorage(root), cleanup: () => rm(root, { recursive: true, force: true }) };
  },
  faults: { shortWrite: smallDisk, cutWrite: smallDisk },
});

it("fs: a failed write (the disk full half way) leaves no temp file behind and none is listed", async (ctx) => {
  const disk = await mountTmpfs(256 * 1024);
  if (typeof disk === "string") {
    console.warn(`[fs] skipped the failed-write test: ${disk}`);
    ctx.skip();
    return;
  }
  try {
    const storage = fsStorage(disk.dir);
    await expect(storage.put("a/b", new Uint8Array(1024 * 1024).fill(7))).rejects.toMatchObject({ kind: "full" });
    expect(await readdir(join(disk.dir, ".partial"))).toEqual([]);
    const listed: string[] = [];
    for await (const info of storage.list("")) listed.push(info.key);
    expect(listed).toEqual([]);
    await expect(storage.put(".partial/x", new Uint8Array(1))).rejects.toThrow(/reserved/);
  } finally {
    await disk.unmount();
  }
});

it("fs: temp files a killed writer left behind are swept once they are an hour old; younger ones stay", async () => {
  const root = await mkdtemp(join(tmpdir(), "storage-fs-"));
  try {
    await mkdir(join(root, ".partial"));
    await writeFile(join(root, ".partial", "old"), "x");
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(root, ".partial", "old"), twoHoursAgo, twoHoursAgo);
    await writeFile(join(root, ".partial", "young"), "x");
    await fsStorage(root).put("a", new Uint8Array([1]));
    expect(await readdir(join(root, ".partial"))).toEqual(["young"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
