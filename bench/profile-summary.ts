/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, e.g. from `npm run bench -- --cpu-prof DIR`):
 * self time by function and by file, and total (inclusive) time of the heaviest functions.
 *
 *   npx tsx bench/profile-summary.ts <file.cpuprofile> [--top N]
 *
 * The bench's workers run a bundle (dist/bench/worker-<hash>.mjs) and V8 records positions
 * in it; while the bundle and its source map are there (bench/run.ts keeps them), every
 * position is mapped back to its source file and line.
 */
import { readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber?: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--"));
const topIndex = args.indexOf("--top");
const top = topIndex >= 0 ? Number(args[topIndex + 1]) : 25;
if (!file) {
  console.error("usage: npx tsx bench/profile-summary.ts <file.cpuprofile> [--top N]");
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node: the time delta that follows each sample belongs to that sample's node.
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i + 1] ?? 0;
  selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, dt));
});
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);

/** The source map of a file:// script from its sourceMappingURL comment, with the map's own URL; null if none. */
const sourceMaps = new Map<string, { map: SourceMap; url: string } | null>();
function sourceMapOf(url: string): { map: SourceMap; url: string } | null {
  if (!url.startsWith("file://")) return null;
  if (!sourceMaps.has(url)) {
    let found: { map: SourceMap; url: string } | null = null;
    try {
      const file = fileURLToPath(url);
      const comment = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(file, "utf8"));
      if (comment && !comment[1]!.startsWith("data:")) {
        const mapFile = join(dirname(file), comment[1]!);
        found = { map: new SourceMap(JSON.parse(readFileSync(mapFile, "utf8"))), url: pathToFileURL(mapFile).href };
      }
    } catch {
      // the bundle or its map is gone: positions stay as V8 recorded them
    }
    sourceMaps.set(url, found);
  }
  return sourceMaps.get(url)!;
}

/** A frame at its source position when its script has a source map, else as recorded. */
function original(frame: CallFrame): CallFrame {
  const source = sourceMapOf(frame.url);
  const entry = source?.map.findEntry(frame.lineNumber, frame.columnNumber ?? 0);
  if (!source || !entry || !("originalSource" in entry)) return frame;
  return { ...frame, url: new URL(entry.originalSource, source.url).href, lineNumber: entry.originalLine, columnNumber: entry.originalColumn };
}
for (const n of profile.nodes) n.callFrame = original(n.callFrame);

const shortUrl = (url: string) => url.replace(/^file:\/\//, "").replace(/^.*\/node_modules\//, "node_modules/").replace(/^.*\/(lib|bench|handlers)\//, "$1/");
const label = (n: ProfileNode) => `${n.callFrame.functionName || "(anonymous)"} ${shortUrl(n.callFrame.url)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""}`;

const selfByFunction = new Map<string, number>();
const selfByFile = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const node = byId.get(id)!;
  selfByFunction.set(label(node), (selfByFunction.get(label(node)) ?? 0) + us);
  const fileKey = node.callFrame.url ? shortUrl(node.callFrame.url) : `(${node.callFrame.functionName || "native"})`;
  selfByFile.set(fileKey, (selfByFile.get(fileKey) ?? 0) + us);
  // Inclusive: every distinct function on the stack gets the sample once.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const key = label(byId.get(cur)!);
    if (seen.has(key)) continue;
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + us);
  }
}

const print = (title: string, map: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${(us / 1000).toFixed(0).padStart(8)} ms ${((100 * us) / totalUs).toFixed(1).padStart(5)}%  ${key}`);
  }
};
console.log(`${file}: ${(totalUs / 1000).toFixed(0)} ms sampled (wall ${((profile.endTime - profile.startTime) / 1000).toFixed(0)} ms)`);
print("self time by file", selfByFile);
print("self time by function", selfByFunction);
print("inclusive time by function", inclusive);
