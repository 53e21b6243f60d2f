import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { EmbeddedChroma } from "../chroma/embedded.js";
import { LOCK_FILE, lockDataDir } from "../chroma/data-dir-lock.js";
import type { ChromaRest } from "../chroma/rest.js";
import { errorFields, type Logger } from "../log.js";
import { SAFETY_TAG } from "../retention.js";
import { recordRestore, type ImageForRestore } from "../rto.js";
import { readCatalog, readManifest } from "../snapshot/catalog.js";
import type { Manifest } from "../snapshot/manifest.js";
import type { ManifestKeys } from "../snapshot/signing.js";
import type { Storage } from "../storage/types.js";
import { catchUp, catchUpRecords, type CatchUpResult } from "./catch-up.js";
import { downloadImage, listImages, pickImage } from "./store.js";
import type { ImageManifest } from "./types.js";

export interface ImageStartupOptions {
  storage: Storage;
  /** The embedded Chroma's data directory (DATA_DIR/chroma): used only when missing or empty. */
  dataDir: string;
  /** A file outside `dataDir` present while an image is being placed and caught up (see clearUnfinishedImage). */
  markerPath: string;
  /**
   * The Chroma that will run on the files (loadableChromaVersion()): only its own images
   * are used. A promise (the probe still running): the download starts meanwhile on a guess.
   */
  chromaVersion: string | Promise<string>;
  keys?: ManifestKeys;
  /** Starts the embedded Chroma on `dataDir`. */
  startChroma: () => Promise<EmbeddedChroma>;
  /** The API client for a started Chroma. */
  client: (url: string) => ChromaRest;
  log: Logger;
  /** Stops the attempt (the service is stopping): rethrown, never turned into a fallback. */
  signal?: AbortSignal;
}

export interface ImageStartupTimings {
  downloadMs: number;
  startMs: number;
  checkMs: number;
  catchUpMs: number;
  totalMs: number;
}

export type ImageStartupOutcome =
  | { used: true; chroma: EmbeddedChroma; snapshot: string; image: string; records: number; catchUp: CatchUpResult; timings: ImageStartupTimings }
  /** Nothing is left behind: `dataDir` is missing or empty and no Chroma runs; restore logically. */
  | { used: false; reason: string };

/**
 * A crash while an image was placed or caught up leaves a Chroma directory that holds
 * neither the snapshot nor the app's data: it must not be mistaken for data at the next
 * start. The marker says so; this empties the directory (under the data-directory lock,
 * so a live owner is never touched) and removes the marker. Returns whether it did.
 */
export async function clearUnfinishedImage(dataDir: string, markerPath: string, log: Logger): Promise<boolean> {
  if (!(await exists(markerPath))) return false;
  await mkdir(dataDir, { recursive: true }); // a crash during the download leaves none
  const lock = await lockDataDir(dataDir, log); // refuses a live owner, ends an orphan Chroma
  try {
    for (const entry of await readdir(dataDir)) if (entry !== LOCK_FILE) await rm(join(dataDir, entry), { recursive: true, force: true });
    // downloadImage's temp folder (a sibling, `.<name>.image-<random>`) when the crash came during the download.
    const parent = dirname(dataDir);
    for (const entry of await readdir(parent)) if (entry.startsWith(`.${basename(dataDir)}.image-`)) await rm(join(parent, entry), { recursive: true, force: true });
  } finally {
    await lock.release();
  }
  await rm(markerPath, { force: true });
  log("warn", "startup restore: an image restore was interrupted (the service stopped or crashed); its files were removed", { dataDir });
  return true;
}

/** True when the directory is missing or has no entry. */
export async function isEmptyDir(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return true;
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/**
 * The startup restore from an image, before the app's Chroma starts: picks the newest
 * image of this Chroma version at or before the newest snapshot, places its files in
 * `dataDir` (downloadImage: checked, renamed into place), starts Chroma on them, checks
 * it (collections, count per collection, sampled ids), then brings it to the snapshot
 * (catchUp). Any doubt: Chroma stopped, the directory removed, `{ used: false, reason }`
 * so the caller restores logically. The caller decides that a restore is wanted
 * (RESTORE_ON_START) and that `dataDir` is empty.
 */
export async function restoreFromImage(options: ImageStartupOptions): Promise<ImageStartupOutcome> {
  const { storage, log, signal } = options;
  const started = Date.now();
  let chroma: EmbeddedChroma | null = null;
  let placed = false;
  try {
    const [{ snapshots }, images] = await Promise.all([readCatalog(storage, options.keys), listImages(storage, options.keys)]);
    const target = snapshots.find((m) => m.tag !== SAFETY_TAG);
    if (!target) return { used: false, reason: "no snapshot in the store" };
    const plan = (chromaVersion: string): { image: ImageManifest } | { reason: string } => {
      const image = pickImage(images, { chromaVersion, atOrBefore: target.id });
      if (!image) return { reason: whyNoImage(images, chromaVersion, target.id) };
      const from = snapshots.find((m) => m.id === image.snapshot);
      if (!from) return { reason: `image ${image.snapshot}: its snapshot is no longer in the store (catching up needs it)` };
      const mismatch = describesOtherData(image, from);
      return mismatch ? { reason: `image ${image.snapshot}: ${mismatch}` } : { image };
    };
    const download = (image: ImageManifest, stop?: AbortSignal) => {
      log("info", "startup restore: placing a restore image", { image: image.snapshot, snapshot: target.id, bytes: image.bytes, storedBytes: image.storedBytes });
      const signals = [signal, stop].filter((s) => s !== undefined);
      return downloadImage(storage, image, options.dataDir, { signal: signals.length > 0 ? AbortSignal.any(signals) : undefined });
    };
    const markPlacing = async (image: ImageManifest) => {
      if (placed) return;
      await writeFile(options.markerPath, JSON.stringify({ image: image.snapshot, target: target.id, since: new Date().toISOString() }) + "\n");
      placed = true;
    };

    // The Chroma version may still be probed (a child process, ~0.2 s): the download starts
    // meanwhile on the image the newest candidate's version would use (the usual case: the
    // Chroma that made the newest image runs again), and is cancelled (its temp folder
    // removed) when the probe names another version.
    const known = typeof options.chromaVersion === "string" ? options.chromaVersion : null;
    const guessed = plan(known ?? images.find((m) => m.snapshot <= target.id)?.chromaVersion ?? "");
    const guess = "image" in guessed ? guessed.image : null;
    const cancel = new AbortController();
    let early: Promise<void> | null = null;
    if (guess) {
      await markPlacing(guess);
      early = download(guess, cancel.signal);
      early.catch(() => {}); // awaited below, or abandoned after cancel
    }
    const chosen = plan(await options.chromaVersion);
    if (!("image" in chosen) || chosen.image !== guess) {
      cancel.abort(new Error("the image guessed was not this Chroma's"));
      const placedGuess = await early?.then(() => true, () => false);
      signal?.throwIfAborted();
      if (placedGuess) await rm(options.dataDir, { recursive: true, force: true }); // it finished first: not this Chroma's files
    }
    if (!("image" in chosen)) {
      await undo();
      return { used: false, reason: chosen.reason };
    }
    const image = chosen.image;
    const from = snapshots.find((m) => m.id === image.snapshot)!;
    if (early && image === guess) await early;
    else {
      await markPlacing(image);
      await download(image);
    }
    const downloaded = Date.now();
    chroma = await options.startChroma();
    if (chroma.version !== image.chromaVersion) throw new Error(`Chroma ${chroma.version} started, the image was made by Chroma ${image.chromaVersion}`);
    const up = Date.now();
    const client = options.client(chroma.url).withSignal(signal);
    await checkImageChroma(client, image);
    const checked = Date.now();
    let caughtUp: CatchUpResult = { upserted: 0, deleted: 0, collectionsRestored: [] };
    if (from.id !== target.id) {
      caughtUp = await catchUp(client, storage, from, target, { signal, log });
      await checkCollectionsOf(client, target);
    } // else checkImageChroma has checked the snapshot's own collections and counts (describesOtherData: the image's are the snapshot's)
    await rm(options.markerPath, { force: true });
    const done = Date.now();
    const timings = { downloadMs: downloaded - started, startMs: up - downloaded, checkMs: checked - up, catchUpMs: done - checked, totalMs: done - started };
    log("info", "startup restore: restored from an image", { image: image.snapshot, snapshot: target.id, chromaVersion: image.chromaVersion, bytes: image.bytes, storedBytes: image.storedBytes, records: target.records, ...caughtUp, ...timings });
    // The image's rate (bytes placed and checked per second) for the RTO estimate; the catch-up is not part of it.
    await recordRestore(storage, { at: new Date(done).toISOString(), snapshot: image.snapshot, kind: "image", records: from.records, bytes: image.bytes, durationMs: checked - started }, log);
    return { used: true, chroma, snapshot: target.id, image: image.snapshot, records: target.records, catchUp: caughtUp, timings };
  } catch (err) {
    if (signal?.aborted) {
      await undo();
      throw err;
    }
    const reason = (err as Error).message;
    log("warn", "startup restore: the image could not be used; restoring logically", { ...errorFields(err), afterMs: Date.now() - started });
    await undo();
    return { used: false, reason };
  }

  async function undo(): Promise<void> {
    await chroma?.stop().catch((err: unknown) => log("error", "startup restore: could not stop the Chroma started on the image", errorFields(err)));
    if (!placed) return;
    await rm(options.dataDir, { recursive: true, force: true });
    await rm(options.markerPath, { force: true });
  }
}

function whyNoImage(images: readonly ImageManifest[], chromaVersion: string, target: string): string {
  if (images.length === 0) return "no image in the store";
  const older = images.filter((i) => i.snapshot <= target);
  if (older.length === 0) return `no image at or before snapshot ${target}`;
  const versions = [...new Set(older.map((i) => i.chromaVersion))].join(", ");
  return `the images at or before snapshot ${target} were made by Chroma ${versions}; this is Chroma ${chromaVersion}`;
}

/** The image must describe the snapshot it names: the same collections and counts. */
function describesOtherData(image: ImageManifest, from: Manifest): string | null {
  const theirs = new Map(from.collections.map((c) => [c.name, c.records]));
  if (image.collections.length !== theirs.size) return `it holds ${image.collections.length} collections, its snapshot ${from.collections.length}`;
  for (const c of image.collections) {
    if (theirs.get(c.name) !== c.records) return `collection ${c.name} holds ${c.records} records, its snapshot ${theirs.get(c.name) ?? "none"}`;
  }
  return null;
}

/** Chroma on the placed files holds what the image says: its collections, their counts, the sampled ids (the collections checked at once). */
async function checkImageChroma(chroma: ChromaRest, image: ImageManifest): Promise<void> {
  const present = await chroma.listCollections();
  const names = present.map((c) => c.name).sort();
  const expected = image.collections.map((c) => c.name).sort();
  if (names.join("\n") !== expected.join("\n")) throw new Error(`Chroma on the image holds collections ${names.join(", ") || "none"}, the image says ${expected.join(", ") || "none"}`);
  await Promise.all(
    image.collections.map(async (c) => {
      const info = present.find((p) => p.name === c.name)!;
      const [count, found] = await Promise.all([chroma.count(info.id), c.sampleIds.length === 0 ? null : chroma.getRecordsByIds(info.id, c.sampleIds)]);
      if (count !== c.records) throw new Error(`Chroma on the image holds ${count} records in ${c.name}, the image says ${c.records}`);
      const ids = new Set(found?.ids ?? []);
      const missing = c.sampleIds.filter((id) => !ids.has(id));
      if (missing.length > 0) throw new Error(`Chroma on the image lacks records ${missing.slice(0, 3).join(", ")} of ${c.name}`);
    }),
  );
}

/** After the catch-up: exactly the snapshot's collections, each with its count. */
async function checkCollectionsOf(chroma: ChromaRest, target: Manifest): Promise<void> {
  const present = await chroma.listCollections();
  const names = present.map((c) => c.name).sort();
  const expected = target.collections.map((c) => c.name).sort();
  if (names.join("\n") !== expected.join("\n")) throw new Error(`after the catch-up Chroma holds collections ${names.join(", ") || "none"}, snapshot ${target.id} has ${expected.join(", ") || "none"}`);
  for (const c of target.collections) {
    const count = await chroma.count(present.find((p) => p.name === c.name)!.id);
    if (count !== c.records) throw new Error(`after the catch-up ${c.name} holds ${count} records, snapshot ${target.id} has ${c.records}`);
  }
}

/** The image a startup restore of `snapshot` would use, with the records its catch-up writes (the RTO estimate); null when none. */
export async function imageForRestore(storage: Storage, snapshot: Manifest, chromaVersion: string, keys?: ManifestKeys): Promise<ImageForRestore | null> {
  const image = pickImage(await listImages(storage, keys), { chromaVersion, atOrBefore: snapshot.id });
  if (!image) return null;
  const from = image.snapshot === snapshot.id ? snapshot : await readManifest(storage, image.snapshot, keys).catch(() => null);
  if (!from || describesOtherData(image, from)) return null;
  return { snapshot: image.snapshot, bytes: image.bytes, deltaRecords: catchUpRecords(from, snapshot) };
}
