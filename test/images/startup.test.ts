import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DataDirInUseError, LOCK_FILE } from "../../lib/chroma/data-dir-lock.js";
import { processInfo } from "../../lib/chroma/processes.js";
import { clearUnfinishedImage, isEmptyDir } from "../../lib/images/startup.js";
import type { LogLine } from "../fixtures/log-lines.js";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function dataDirWithCrashedImage(): Promise<{ root: string; chroma: string; marker: string }> {
  const root = await mkdtemp(join(tmpdir(), "image-crash-"));
  dirs.push(root);
  const chroma = join(root, "chroma");
  await mkdir(join(chroma, "0b7c-segment"), { recursive: true });
  await writeFile(join(chroma, "chroma.sqlite3"), "half caught up");
  await writeFile(join(chroma, "0b7c-segment", "data_level0.bin"), "x");
  await mkdir(join(root, ".chroma.image-1a2b3c4d"));
  await writeFile(join(root, ".chroma.image-1a2b3c4d", "chroma.sqlite3"), "half downloaded");
  const marker = join(root, "image-restore.json");
  await writeFile(marker, "{}\n");
  return { root, chroma, marker };
}

describe("clearUnfinishedImage (a crash while an image was placed or caught up)", () => {
  it("empties the Chroma directory and removes the download's temp folder and the marker, logged", async () => {
    const { root, chroma, marker } = await dataDirWithCrashedImage();
    const logs: LogLine[] = [];
    expect(await clearUnfinishedImage(chroma, marker, (level, message, fields) => logs.push({ level, message, ...fields }))).toBe(true);
    expect(await isEmptyDir(chroma)).toBe(true);
    expect((await readdir(root)).sort()).toEqual(["chroma"]);
    expect(logs.some((l) => l.level === "warn" && /image restore was interrupted/.test(l.message))).toBe(true);
    // Without the marker the directory is data: never touched.
    await writeFile(join(chroma, "chroma.sqlite3"), "the app's data");
    expect(await clearUnfinishedImage(chroma, marker, () => {})).toBe(false);
    expect(await readdir(chroma)).toEqual(["chroma.sqlite3"]);
  });

  it("a crash before the download was renamed into place: no Chroma directory, only the temp folder", async () => {
    const { root, chroma, marker } = await dataDirWithCrashedImage();
    await rm(chroma, { recursive: true });
    expect(await clearUnfinishedImage(chroma, marker, () => {})).toBe(true);
    expect((await readdir(root)).sort()).toEqual(["chroma"]);
    expect(await isEmptyDir(chroma)).toBe(true);
  });

  it("refuses a directory a live process holds (its lock file), touching nothing", async () => {
    const { chroma, marker } = await dataDirWithCrashedImage();
    const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
    try {
      const info = (await processInfo(other.pid!))!;
      await writeFile(join(chroma, LOCK_FILE), JSON.stringify({ pid: other.pid, startTicks: info.startTicks, chroma: null, port: null, since: "now" }));
      await expect(clearUnfinishedImage(chroma, marker, () => {})).rejects.toBeInstanceOf(DataDirInUseError);
      expect((await readdir(chroma)).sort()).toEqual([LOCK_FILE, "0b7c-segment", "chroma.sqlite3"].sort());
    } finally {
      other.kill("SIGKILL");
    }
  });
});
