/**
 * Makes a restore image of a snapshot (issue 16) in a SCRATCH Chroma, never the app's:
 * from the previous image of the same Chroma version (downloaded, then caught up to the
 * snapshot through the API) when there is one, else by a logical restore of the
 * snapshot. The scratch Chroma is then checked like a restore drill (count per
 * collection, sampled records are their own nearest neighbour with the snapshot's
 * content), the result recorded as the snapshot's drill, Chroma stopped (its files at
 * rest), and the data directory uploaded as the image. The scratch directory is removed
 * whatever happened.
 */
import { rm } from "node:fs/promises";
import type { EmbeddedChroma } from "../chroma/embedded.js";
import { ChromaRest } from "../chroma/rest.js";
import { checkRestored, recordDrill, type DrillCheck, type DrillResult } from "../drill.js";
import { ImageCheckFailedError } from "../errors.js";
import type { Logger } from "../log.js";
import { recordRestore } from "../rto.js";
import { readManifest } from "../snapshot/catalog.js";
import type { Manifest } from "../snapshot/manifest.js";
import { restoreSnapshot } from "../snapshot/restore.js";
import type { ManifestKeys } from "../snapshot/signing.js";
import type { Storage } from "../storage/types.js";
import { catchUp } from "./catch-up.js";
import { downloadImage, listImages, pickImage, uploadImage } from "./store.js";
import { summarizeImage, type ImageCollection, type ImageManifest, type ImageSummary } from "./types.js";

/** Record ids per collection the image keeps for the check after a start from it. */
const SAMPLE_IDS = 3;

export interface BuildImageOptions {
  /** Where the scratch Chroma keeps its data (DATA_DIR/image-scratch); wiped first, removed at the end. */
  scratchDir: string;
  /** The version of the Chroma `startChroma` runs (EmbeddedChroma.version): images of another version are not reused. */
  chromaVersion: string;
  /** Starts a Chroma on a data directory (startEmbeddedChroma, on a free port). */
  startChroma: (dataDir: string) => Promise<EmbeddedChroma>;
  keys?: ManifestKeys;
  signal?: AbortSignal;
  log: Logger;
  now?: () => Date;
  /**
   * Taken just for the upload and released after it: the store lock (a real prune sweeps
   * chunks no manifest names yet, so it must not run while the image's chunks go up).
   * Its signal stops the upload when the lock is lost.
   */
  lease?: () => Promise<{ signal: AbortSignal; release(): Promise<void> }>;
}

export interface BuiltImage {
  image: ImageSummary;
  uploadedBytes: number;
  drill: DrillResult;
}

export async function buildImage(storage: Storage, snapshot: Manifest, options: BuildImageOptions): Promise<BuiltImage> {
  const { scratchDir, log, signal } = options;
  const now = options.now ?? (() => new Date());
  const started = now().getTime();
  await rm(scratchDir, { recursive: true, force: true });
  let chroma: EmbeddedChroma | null = null;
  try {
    const placed = await placeSnapshot(storage, snapshot, options);
    chroma = placed.chroma;
    const rest = new ChromaRest({ url: chroma.url }).withSignal(signal);
    const { checks, sampleIds } = await checkRestored(rest, storage, snapshot, (name) => name);
    checks.unshift(placed.check);
    checks.push(await exactCollections(rest, snapshot));
    const drill: DrillResult = {
      snapshot: snapshot.id,
      via: "image",
      at: new Date(started).toISOString(),
      ok: checks.every((c) => c.ok),
      records: snapshot.records,
      bytes: snapshot.bytes,
      durationMs: now().getTime() - started,
      checks,
    };
    await recordDrill(storage, drill, log);
    if (!drill.ok) throw new ImageCheckFailedError(`no image made: the scratch Chroma holding snapshot ${snapshot.id} failed its checks: ${checks.filter((c) => !c.ok).map((c) => c.message).join("; ")}`, drill);
    if (placed.logical) await recordRestore(storage, { at: drill.at, snapshot: snapshot.id, kind: "drill", records: snapshot.records, bytes: snapshot.bytes, durationMs: placed.durationMs }, log);
    // Stopped before the copy: Chroma's files are at rest, nothing half written.
    await chroma.stop();
    chroma = null;
    signal?.throwIfAborted();
    const collections: ImageCollection[] = snapshot.collections.map((c) => ({ name: c.name, records: c.records, sampleIds: (sampleIds.get(c.name) ?? []).slice(0, SAMPLE_IDS) }));
    const lease = await options.lease?.();
    let uploaded: { manifest: ImageManifest; uploadedBytes: number; reusedBytes: number };
    try {
      const stop = lease ? (signal ? AbortSignal.any([signal, lease.signal]) : lease.signal) : signal;
      uploaded = await uploadImage(storage, scratchDir, { snapshot: snapshot.id, chromaVersion: options.chromaVersion, collections }, { signal: stop, keys: options.keys });
    } finally {
      await lease?.release();
    }
    log("info", `restore image of snapshot ${snapshot.id} made`, {
      snapshot: snapshot.id,
      chromaVersion: options.chromaVersion,
      from: placed.from,
      bytes: uploaded.manifest.bytes,
      storedBytes: uploaded.manifest.storedBytes,
      uploadedBytes: uploaded.uploadedBytes,
      reusedBytes: uploaded.reusedBytes,
      durationMs: now().getTime() - started,
    });
    return { image: summarizeImage(uploaded.manifest), uploadedBytes: uploaded.uploadedBytes, drill };
  } finally {
    await chroma?.stop().catch((err: unknown) => log("warn", "could not stop the scratch Chroma of an image build", { error: (err as Error).message }));
    await rm(scratchDir, { recursive: true, force: true }).catch((err: unknown) => log("warn", "could not remove the scratch directory of an image build", { dir: scratchDir, error: (err as Error).message }));
  }
}

interface Placed {
  chroma: EmbeddedChroma;
  check: DrillCheck;
  /** A logical restore (its duration is a restore rate worth recording); false: from an image and a catch-up. */
  logical: boolean;
  from: string;
  durationMs: number;
}

/** A scratch Chroma holding the snapshot: from the previous image when one fits, else restored logically. */
async function placeSnapshot(storage: Storage, snapshot: Manifest, options: BuildImageOptions): Promise<Placed> {
  const { scratchDir, log, signal } = options;
  const started = Date.now();
  try {
    const fromImage = await fromPreviousImage(storage, snapshot, options);
    if (fromImage) return fromImage;
  } catch (err) {
    signal?.throwIfAborted();
    log("warn", `image build of snapshot ${snapshot.id}: starting from the previous image failed, restoring the snapshot logically instead`, { snapshot: snapshot.id, error: (err as Error).message });
    await rm(scratchDir, { recursive: true, force: true });
  }
  signal?.throwIfAborted();
  const chroma = await options.startChroma(scratchDir);
  try {
    if (chroma.version !== options.chromaVersion) throw new Error(`the scratch Chroma runs ${chroma.version}, images are made for Chroma ${options.chromaVersion}`);
    const rest = new ChromaRest({ url: chroma.url }).withSignal(signal);
    await restoreSnapshot(rest, storage, snapshot, { mode: "replace", log, signal });
    return {
      chroma,
      logical: true,
      from: "logical restore",
      durationMs: Date.now() - started,
      check: { name: "restore", collection: null, ok: true, message: `${snapshot.collections.length} collection(s) restored into a scratch Chroma` },
    };
  } catch (err) {
    await chroma.stop();
    throw err;
  }
}

/** The previous image of the same Chroma version, downloaded and caught up to `snapshot`; null when there is none. */
async function fromPreviousImage(storage: Storage, snapshot: Manifest, options: BuildImageOptions): Promise<Placed | null> {
  const { scratchDir, log, signal } = options;
  const previous = pickImage(await listImages(storage, options.keys), { chromaVersion: options.chromaVersion, atOrBefore: snapshot.id });
  if (!previous) return null;
  // Its snapshot is what the files hold: the catch-up's starting point. Pruned: no starting point.
  const from = await readManifest(storage, previous.snapshot, options.keys);
  const started = Date.now();
  // Off the cold start's path: the whole-file hashes check the previous image's making too.
  await downloadImage(storage, previous, scratchDir, { signal, checkFileHashes: true });
  const chroma = await options.startChroma(scratchDir);
  try {
    if (chroma.version !== previous.chromaVersion) throw new Error(`Chroma ${chroma.version} started, image ${previous.snapshot} was made by Chroma ${previous.chromaVersion}`);
    const rest = new ChromaRest({ url: chroma.url }).withSignal(signal);
    const delta = await catchUp(rest, storage, from, snapshot, { signal, log });
    return {
      chroma,
      logical: false,
      from: `image of ${previous.snapshot}`,
      durationMs: Date.now() - started,
      check: {
        name: "restore",
        collection: null,
        ok: true,
        message: `the image of snapshot ${previous.snapshot} placed in a scratch Chroma and caught up (${delta.upserted} upserted, ${delta.deleted} deleted, ${delta.collectionsRestored.length} collection(s) restored whole)`,
      },
    };
  } catch (err) {
    await chroma.stop();
    throw err;
  }
}

/** The image holds the snapshot's collections and no other. */
async function exactCollections(chroma: ChromaRest, snapshot: Manifest): Promise<DrillCheck> {
  const want = new Set(snapshot.collections.map((c) => c.name));
  const extra = (await chroma.listCollections()).map((c) => c.name).filter((n) => !want.has(n));
  return {
    name: "count",
    collection: null,
    ok: extra.length === 0,
    message: extra.length === 0 ? `the scratch Chroma holds exactly the snapshot's ${want.size} collection(s)` : `the scratch Chroma holds collections the snapshot has not: ${extra.join(", ")}`,
  };
}
