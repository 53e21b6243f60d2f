/**
 * Restore images (API.md "Restore images", issue 16): a copy of an embedded Chroma's data
 * directory holding exactly one snapshot, stored deduplicated under `images/`.
 *
 * Layout in the store (under STORAGE_PREFIX):
 *   images/<snapshot-id>.json   the image manifest (ImageManifest), written last: its presence is the commit
 *   chunks/<aa>/<sha256>        the files' content-defined chunks, compressed with the project's codec;
 *                               the same content-addressed space as snapshot chunks, so prune's chunk
 *                               collection must count the kept images' chunks as referenced.
 *
 * Modules (one job each):
 *   ./cdc.ts          content-defined chunk boundaries over a file's bytes
 *   ./store.ts        uploadImage / readImage / listImages / pickImage / downloadImage / pruneImages
 *   ./catch-up.ts     brings a Chroma holding snapshot A to snapshot B through the API (the records that differ)
 *   ./build.ts        makes an image of a snapshot in a scratch Chroma (never the app's), also a restore drill
 *   ./startup.ts      the startup restore from an image into an empty embedded data directory
 */

/** One content-defined piece of a file, as stored. */
export interface ImageChunkRef {
  /** sha256 (hex) of the stored (compressed) bytes: the key is chunks/<aa>/<hash>. */
  hash: string;
  /** Stored (compressed) size in bytes. */
  bytes: number;
  /** Size of the piece before compression. */
  size: number;
  /**
   * How the stored bytes decode (format 2): absent, raw deflate of `size` bytes; `"raw"`,
   * the piece itself, stored as is because deflate saved too little to be worth inflating
   * at every cold start (then `bytes` equals `size`). Format 1 has no raw chunks.
   */
  codec?: "raw";
}

export interface ImageFile {
  /** Path relative to the data directory, `/`-separated; never absolute, never `..`. */
  path: string;
  /** File size in bytes (the sum of its chunks' `size`). */
  size: number;
  /**
   * sha256 (hex) of the whole file, as the uploader read it. Checked by a download that asks
   * for it (downloadImage `checkFileHashes`: an image made from a previous one); the cold
   * start relies on the chain manifest -> chunk hashes -> sizes instead (download.ts).
   */
  sha256: string;
  chunks: ImageChunkRef[];
}

/** What the image's Chroma holds, checked after it starts (count per collection, sampled ids). */
export interface ImageCollection {
  name: string;
  records: number;
  /** A few record ids the started Chroma must return. */
  sampleIds: string[];
}

/** What uploadImage writes; parseImageManifest reads 1 and 2. */
export const IMAGE_FORMAT_VERSION = 2;

export interface ImageManifest {
  /** 1: every chunk deflated; 2: a chunk may be stored raw (ImageChunkRef `codec`). */
  formatVersion: 1 | 2;
  /** The snapshot the image holds exactly. */
  snapshot: string;
  /** Version of the Chroma that wrote the files (the embedded bindings' version, e.g. "1.0.5"). */
  chromaVersion: string;
  /** ISO time the image was committed. */
  createdAt: string;
  /** Total file bytes (uncompressed). */
  bytes: number;
  /** Total stored bytes of its chunks (compressed). */
  storedBytes: number;
  files: ImageFile[];
  collections: ImageCollection[];
}

/** The `images` entries of GET /status (API.md). */
export interface ImageSummary {
  snapshot: string;
  chromaVersion: string;
  bytes: number;
  createdAt: string;
}

export function summarizeImage(m: ImageManifest): ImageSummary {
  return { snapshot: m.snapshot, chromaVersion: m.chromaVersion, bytes: m.bytes, createdAt: m.createdAt };
}

/** Files of a data directory that never go into an image (they belong to one running process). */
export const IMAGE_EXCLUDED_FILES: readonly string[] = [".chroma-backup.pid"];
