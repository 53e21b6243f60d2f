// Types of scripts/build.mjs, for the TypeScript that imports it (bench/run.ts).

/** The repository root. */
export declare const ROOT: string;

export interface NodeBundle {
  /** Absolute paths of the entry files (`<outdir>/<outName>.mjs`, or `<outName>-<hash>.mjs`), in entryPoints order. */
  entries: string[];
  /** Output files rewritten by this build (relative to root); the others already held the same bytes. */
  written: string[];
  /** Every file bundled, relative to root, sorted. */
  inputs: string[];
  /** When the build started, ms since the epoch. */
  startedAt: number;
  ms: number;
}

/**
 * Bundles `entryPoints` ({ outName: sourcePath }, relative to root) into `outdir` as npm
 * start's bundle is built; with `hashNames`, entry files are named by their content.
 */
export declare function bundleForNode(entryPoints: Record<string, string>, outdir: string, options?: { root?: string; hashNames?: boolean }): Promise<NodeBundle>;

/** dist/server.mjs, dist/index.mjs, dist/cli.mjs and dist/cli.sources.json (`npm run build` also emits dist/types/). */
export declare function buildDist(options?: { root?: string }): Promise<{ written: string[]; ms: number }>;
