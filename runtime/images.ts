import { join } from "node:path";
import type { EmbeddedChroma } from "../lib/chroma/embedded.js";
import type { Config } from "../lib/config.js";
import { buildImage } from "../lib/images/build.js";
import type { ImageMaking } from "../lib/service.js";

/**
 * Restore images on Node with the embedded Chroma: made in a scratch Chroma on
 * DATA_DIR/image-scratch, started by `startChroma` (startEmbeddedChroma on a free port),
 * labelled `chromaVersion`: the version of the running embedded Chroma (the scratch one
 * loads the same bindings; build.ts refuses one that does not).
 * Kept out of compose.ts, which the Worker bundles too: the build reads and writes files.
 */
export function embeddedImageMaking(config: Config, chromaVersion: string, startChroma: (dataDir: string) => Promise<EmbeddedChroma>): ImageMaking {
  const scratchDir = join(config.dataDir, "image-scratch");
  return {
    chromaVersion,
    intervalSeconds: config.images.intervalSeconds,
    make: (storage, snapshot, options) => buildImage(storage, snapshot, { ...options, scratchDir, chromaVersion, startChroma }),
  };
}
