/**
 * The benchmark's data: real text, clustered unit-norm embeddings, mixed-type metadata.
 *
 * Documents are paragraphs of the machine's own changelogs (/usr/share/doc/<pkg>/
 * changelog*.gz, gunzipped), taken in order, so neighbouring records come from the same
 * file as chunks of one document would. Embeddings are k cluster centres plus Gaussian
 * noise, normalised to unit length, stored as float32. Metadata mixes ints, floats
 * (integral floats such as `3.0` included: they are written as raw JSON, as a Python
 * client would send them), booleans and strings, with a key set that varies by record.
 *
 * Everything is deterministic given the seed, so a worker process can rebuild the same
 * records without them crossing a pipe.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { fnv1a } from "../lib/snapshot/chunker.js";

export { mulberry32 } from "../test/fixtures/dataset.js";
import { mulberry32 } from "../test/fixtures/dataset.js";

export interface CollectionSpec {
  name: string;
  space: "l2" | "cosine" | "ip";
  /** Share of the records. */
  share: number;
  configurationJson: string;
  metadataJson: string;
}

/** The layout of the benchmark's collections; the first is the biggest (page-size tuning uses it). */
export function collectionSpecs(prefix: string): CollectionSpec[] {
  return [
    { name: `${prefix}-kb-l2`, space: "l2", share: 0.5, configurationJson: '{"hnsw":{"space":"l2"}}', metadataJson: '{"team":"docs","version":3,"ratio":1.0}' },
    { name: `${prefix}-support-cosine`, space: "cosine", share: 0.3, configurationJson: '{"hnsw":{"space":"cosine"}}', metadataJson: '{"team":"support"}' },
    { name: `${prefix}-notes-ip`, space: "ip", share: 0.2, configurationJson: '{"hnsw":{"space":"ip"}}', metadataJson: "null" },
  ];
}

/** Splits `total` records over the specs by share; the last takes the remainder. */
export function splitCounts(total: number, specs: CollectionSpec[]): number[] {
  const counts = specs.map((s) => Math.floor(total * s.share));
  counts[counts.length - 1]! += total - counts.reduce((a, b) => a + b, 0);
  return counts;
}

export interface Paragraph {
  source: string;
  index: number;
  text: string;
}

export interface Corpus {
  paragraphs: Paragraph[];
  /** Where the text came from, for the report. */
  origin: string;
  chars: number;
}

/** Every changelog under /usr/share/doc, sorted, so the corpus is the same on every run. */
function changelogFiles(): string[] {
  const root = "/usr/share/doc";
  const out: string[] = [];
  let packages: string[];
  try {
    packages = readdirSync(root).sort();
  } catch {
    return out;
  }
  for (const pkg of packages) {
    let names: string[];
    try {
      names = readdirSync(join(root, pkg)).sort();
    } catch {
      continue;
    }
    for (const name of names) if (/^changelog.*\.gz$/.test(name)) out.push(join(root, pkg, name));
  }
  return out;
}

/** Text files a package ships (the fallback corpus): README/CHANGELOG/LICENSE-like files under node_modules. */
function packageTextFiles(): string[] {
  const require = createRequire(import.meta.url);
  const modules = join(dirname(require.resolve("typescript/package.json")), "..");
  const out: string[] = [];
  for (const pkg of readdirSync(modules).sort()) {
    const dir = join(modules, pkg);
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      continue;
    }
    for (const name of names) if (/^(readme|changelog|history)(\.md)?$/i.test(name)) out.push(join(dir, name));
  }
  return out;
}

function splitParagraphs(text: string, source: string, into: Paragraph[], seen: Set<string>): number {
  let chars = 0;
  let index = 0;
  let pending = "";
  for (const raw of text.split(/\n[ \t]*\n/)) {
    const p = raw.replace(/[ \t]+\n/g, "\n").trim();
    if (p.length === 0) continue;
    // Short paragraphs (a version line, a sign-off) are joined to the next, as a
    // text splitter would: a document is at least ~300 characters, at most 2000.
    pending = pending ? `${pending}\n\n${p}` : p;
    if (pending.length < 300) continue;
    const doc = pending.length > 2000 ? pending.slice(0, 2000) : pending;
    pending = "";
    if (seen.has(doc)) continue;
    seen.add(doc);
    into.push({ source, index: index++, text: doc });
    chars += doc.length;
  }
  return chars;
}

/** Enough paragraphs for `wanted` documents (fewer if the machine has less text: the caller wraps around). */
export function loadCorpus(wanted: number): Corpus {
  const paragraphs: Paragraph[] = [];
  const seen = new Set<string>();
  let chars = 0;
  const changelogs = changelogFiles();
  for (const file of changelogs) {
    if (paragraphs.length >= wanted) break;
    let text: string;
    try {
      text = gunzipSync(readFileSync(file)).toString("utf8");
    } catch {
      continue;
    }
    chars += splitParagraphs(text, file.slice("/usr/share/doc/".length), paragraphs, seen);
  }
  if (paragraphs.length > 0) return { paragraphs, origin: `/usr/share/doc changelogs (${changelogs.length} files)`, chars };
  for (const file of packageTextFiles()) {
    if (paragraphs.length >= wanted) break;
    if (statSync(file).size > 4 * 1024 * 1024) continue;
    chars += splitParagraphs(readFileSync(file, "utf8"), file, paragraphs, seen);
  }
  if (paragraphs.length === 0) throw new Error("no text corpus found (neither /usr/share/doc changelogs nor package READMEs)");
  return { paragraphs, origin: "README/CHANGELOG files shipped in node_modules", chars };
}

/** One collection's records in columns: what is seeded, and what the snapshot should hold. */
export interface GeneratedCollection {
  spec: CollectionSpec;
  ids: string[];
  dim: number;
  /** n*dim float32, each vector unit-norm. */
  embeddings: Float32Array;
  documents: string[];
  /** Raw JSON text per record (integral floats written as `3.0`). */
  metadatas: string[];
}

function gaussian(rand: () => number): number {
  let u = rand();
  while (u === 0) u = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

const LANGS = ["en", "en", "en", "de", "fr", "es", "ja"];
const KINDS = ["changelog", "release-notes", "security", "packaging"];

/** A float with a fractional part, as text. */
function fractional(rand: () => number, scale: number, digits: number): string {
  const text = (rand() * scale).toFixed(digits);
  return /\.0+$/.test(text) ? `${text.slice(0, -1)}1` : text;
}

/**
 * Builds the records of each collection. `offset` numbers the records (ids, corpus
 * position) so that extra records for the scale run do not repeat the first ones.
 */
export function generateCollections(opts: {
  specs: CollectionSpec[];
  counts: number[];
  dim: number;
  seed: number;
  corpus: Corpus;
  clusters?: number;
  corpusOffset?: number;
}): GeneratedCollection[] {
  const { specs, counts, dim, corpus } = opts;
  const clusters = opts.clusters ?? 48;
  const rand = mulberry32(opts.seed);
  const centres: Float64Array[] = [];
  for (let c = 0; c < clusters; c++) {
    const v = new Float64Array(dim);
    let norm = 0;
    for (let d = 0; d < dim; d++) {
      v[d] = gaussian(rand);
      norm += v[d]! * v[d]!;
    }
    norm = Math.sqrt(norm);
    for (let d = 0; d < dim; d++) v[d]! /= norm;
    centres.push(v);
  }
  // Noise of about half the centre's length: records of a cluster are near, not identical.
  const sigma = 0.5 / Math.sqrt(dim);
  let cursor = opts.corpusOffset ?? 0;
  const out: GeneratedCollection[] = [];
  const vec = new Float64Array(dim);
  specs.forEach((spec, s) => {
    const n = counts[s]!;
    const ids: string[] = new Array<string>(n);
    const embeddings = new Float32Array(n * dim);
    const documents: string[] = new Array<string>(n);
    const metadatas: string[] = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const para = corpus.paragraphs[cursor % corpus.paragraphs.length]!;
      cursor++;
      // Records from the same source file lean to the same cluster, as chunks of one document would.
      const sourceCluster = fnv1a(para.source) % clusters;
      const centre = centres[rand() < 0.7 ? sourceCluster : Math.floor(rand() * clusters)]!;
      let norm = 0;
      for (let d = 0; d < dim; d++) {
        vec[d] = centre[d]! + sigma * gaussian(rand);
        norm += vec[d]! * vec[d]!;
      }
      norm = Math.sqrt(norm);
      for (let d = 0; d < dim; d++) embeddings[i * dim + d] = vec[d]! / norm;
      ids[i] = `${para.source.replace(/[^a-zA-Z0-9._-]+/g, "-")}#${para.index}-${(cursor - 1).toString(36)}`;
      documents[i] = para.text;
      const parts = [
        `"source":${JSON.stringify(para.source)}`,
        `"paragraph":${para.index}`,
        `"chars":${para.text.length}`,
        `"score":${fractional(rand, 1, 6)}`,
        `"weight":${1 + Math.floor(rand() * 9)}.0`,
        `"lang":${JSON.stringify(LANGS[Math.floor(rand() * LANGS.length)]!)}`,
      ];
      if (rand() < 0.7) parts.push(`"reviewed":${rand() < 0.5}`);
      if (rand() < 0.5) parts.push(`"year":${1995 + Math.floor(rand() * 30)}`);
      if (rand() < 0.4) parts.push(`"kind":${JSON.stringify(KINDS[Math.floor(rand() * KINDS.length)]!)}`);
      if (rand() < 0.3) parts.push(`"latency_ms":${fractional(rand, 500, 2)}`);
      metadatas[i] = `{${parts.join(",")}}`;
    }
    out.push({ spec, ids, dim, embeddings, documents, metadatas });
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Seeding through Chroma's REST API with hand-built JSON (floats such as 3.0 stay floats).

const restBase = (url: string) => `${url}/api/v2/tenants/default_tenant/databases/default_database`;

export async function rest(url: string, method: string, path: string, body?: string): Promise<unknown> {
  const res = await fetch(path.startsWith("/api") ? `${url}${path}` : `${restBase(url)}${path}`, {
    method,
    headers: { "content-type": "application/json" },
    body,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
  return text ? JSON.parse(text) : null;
}

export async function createCollection(url: string, spec: CollectionSpec, name = spec.name): Promise<string> {
  const created = (await rest(url, "POST", "/collections", `{"name":${JSON.stringify(name)},"configuration":${spec.configurationJson},"metadata":${spec.metadataJson}}`)) as { id: string };
  return created.id;
}

function addBody(c: GeneratedCollection, start: number, end: number): string {
  const embeddings: string[] = [];
  for (let i = start; i < end; i++) {
    embeddings.push(`"${Buffer.from(c.embeddings.buffer, c.embeddings.byteOffset + i * c.dim * 4, c.dim * 4).toString("base64")}"`);
  }
  return (
    `{"ids":${JSON.stringify(c.ids.slice(start, end))},` +
    `"embeddings":[${embeddings.join(",")}],` +
    `"documents":${JSON.stringify(c.documents.slice(start, end))},` +
    `"metadatas":[${c.metadatas.slice(start, end).join(",")}]}`
  );
}

/** Creates the collection (unless `id` is given) and adds every record, `batch` at a time. */
export async function seedCollection(url: string, c: GeneratedCollection, batch = 5000, id?: string): Promise<string> {
  const collectionId = id ?? (await createCollection(url, c.spec));
  // Two requests in flight: the next body is built while Chroma indexes the last.
  let pending: Promise<unknown> | null = null;
  for (let start = 0; start < c.ids.length; start += batch) {
    const body = addBody(c, start, Math.min(c.ids.length, start + batch));
    if (pending) await pending;
    pending = rest(url, "POST", `/collections/${collectionId}/add`, body);
  }
  if (pending) await pending;
  return collectionId;
}
