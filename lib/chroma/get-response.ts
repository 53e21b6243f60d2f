import { Buffer } from "node:buffer";
import { ChromaRequestError } from "../errors.js";
import { parseFloatRows, type FloatRows } from "../json/float-rows.js";
import { JsonColumn, scanStringColumn } from "../json/json-column.js";
import { canonicalFlatObjects, canonicalJson, parseRawJson, topLevelMembers } from "../json/raw-json.js";
import type { RecordBatch } from "../snapshot/records.js";

/**
 * A get response as Chroma sends it, bytes. Two columns are read from the bytes without
 * going through JSON.parse: the embeddings (most of the bytes), straight into float32s
 * (docs: parseFloatRows), so no page-sized string or array is built for them (it would
 * live in V8's old space until a full collection); and the documents, kept as the JSON
 * text they are (docs: JsonColumn). The rest goes through parseGetResponse. Anything but
 * plain rows of numbers and canonically escaped strings takes the general path.
 */
export function parseGetResponseBytes(bytes: Uint8Array): RecordBatch {
  const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const rows = embeddingRows(body);
  let documents = documentsColumn(body, rows?.end ?? 0);
  if (documents && rows && documents.start < rows.end && rows.start < documents.end) documents = null;
  const cuts = [
    ...(rows ? [{ start: rows.start, end: rows.end, with: '"embeddings":null' }] : []),
    ...(documents ? [{ start: documents.start, end: documents.end, with: '"documents":null' }] : []),
  ].sort((a, b) => a.start - b.start);
  let text = "";
  let pos = 0;
  for (const cut of cuts) {
    text += body.toString("utf8", pos, cut.start) + cut.with;
    pos = cut.end;
  }
  text += body.toString("utf8", pos, body.byteLength);
  const rest = parseGetText(text, documents?.column ?? null, true);
  // A nested "embeddings" or "documents" key (inside metadata) was cut instead: the top-level one is still there.
  if (!rest || (rows && rest.dim > 0)) return parseGetResponse(body.toString("utf8"));
  if (!rows) return rest;
  const n = rest.ids.length;
  if (rows.rows !== n) throw new ChromaRequestError(`Chroma returned ${rows.rows} embeddings for ${n} records`, 502);
  if (rows.badRow >= 0) {
    throw new ChromaRequestError(`record ${JSON.stringify(rest.ids[rows.badRow])} has an embedding of ${rows.badRowLength} dimensions, not ${rows.dim}`, 502);
  }
  const dim = rows.dim;
  const embeddings = rows.values;
  return { ...rest, dim, embeddings };
}

const DOCUMENTS_KEY = Buffer.from('"documents":');

/** The documents member's value as a column, with where the member is, or null when it is not a canonically written column of strings and nulls. */
function documentsColumn(body: Buffer, embeddingsEnd: number): { start: number; end: number; column: JsonColumn } | null {
  // As with embeddings: the first occurrence outside a string is the top-level key, unless
  // a metadata key has the name, which parseGetResponseBytes detects. Chroma writes the
  // documents after the embeddings, so the search starts there (it skips most bytes), and
  // only looks before them when the key is not found after.
  let at = body.indexOf(DOCUMENTS_KEY, embeddingsEnd);
  if (at < 0 && embeddingsEnd > 0) at = body.indexOf(DOCUMENTS_KEY);
  if (at < 0) return null;
  const scanned = scanStringColumn(body, at + DOCUMENTS_KEY.length);
  // Copied: the body's buffer is reused for the next page (ResponseBuffers).
  return scanned && scanned.canonical ? { start: at, end: scanned.end, column: scanned.column.copy() } : null;
}

const EMBEDDINGS_KEY = Buffer.from('"embeddings":');
const METADATAS_KEY = '"metadatas":';

/** The embeddings member's value, read into float32s, with where the member is; null when it is not plain rows of numbers. */
function embeddingRows(body: Buffer): (FloatRows & { start: number }) | null {
  // As with metadatas (below): the first occurrence outside a string is the top-level key,
  // unless a metadata value nests it, which parseGetResponseBytes detects.
  const at = body.indexOf(EMBEDDINGS_KEY);
  if (at < 0) return null;
  const rows = parseFloatRows(body, at + EMBEDDINGS_KEY.length);
  return rows && { ...rows, start: at };
}

/**
 * The response goes through the native JSON.parse, except the metadatas column, which is
 * read from the source text because JSON.parse loses the difference between `2.0` and
 * `2`. Its first `"metadatas":` is the top-level key: no column before it holds objects,
 * and inside a JSON string a quote is escaped.
 */
export function parseGetResponse(text: string): RecordBatch {
  return parseGetText(text, null, true)!;
}

/**
 * `cutDocuments`: the documents column, read from the bytes, with `"documents":null` in
 * its place in `text`; null is returned when the column is still there (what was cut was
 * a metadata key of that name).
 */
function parseGetText(text: string, cutDocuments: JsonColumn | null, fastMetadata: boolean): RecordBatch | null {
  // The metadatas column is read from the source text; when the fast path takes it, it is
  // cut out of what JSON.parse gets, so it is not parsed twice.
  const at = text.indexOf(METADATAS_KEY);
  const fast = at < 0 || !fastMetadata ? null : canonicalFlatObjects(text, at + METADATAS_KEY.length);
  const parse = (json: string) => {
    try {
      return JSON.parse(json) as { ids?: unknown; embeddings?: unknown; documents?: unknown; uris?: unknown; metadatas?: unknown };
    } catch {
      throw new ChromaRequestError("Chroma answered a get with invalid JSON", 502);
    }
  };
  const body = fast ? parse(`${text.slice(0, at)}${METADATAS_KEY}null${text.slice(fast.end)}`) : parse(text);
  // A nested "metadatas" key was cut instead of the column: the column is still there.
  if (fast && body.metadatas !== null) return parseGetText(text, cutDocuments, false);
  if (cutDocuments && body.documents !== null) return null;
  const column = (name: string, value: unknown, n: number): unknown[] => {
    if (value === null || value === undefined) return new Array<null>(n).fill(null);
    if (!Array.isArray(value) || value.length !== n) throw new ChromaRequestError(`Chroma returned a ${name} column of the wrong shape`, 502);
    return value;
  };
  const textColumn = (name: string, value: unknown, n: number): (string | null)[] => {
    const values = column(name, value, n);
    if (!values.every((x) => x === null || typeof x === "string")) throw new ChromaRequestError(`Chroma returned a ${name} column with values that are not text`, 502);
    return values as (string | null)[];
  };
  if (!Array.isArray(body.ids) || !body.ids.every((id) => typeof id === "string")) throw new ChromaRequestError("Chroma returned no ids column", 502);
  const ids = body.ids as string[];
  const n = ids.length;
  const rawEmbeddings = column("embeddings", body.embeddings, n) as (number[] | null)[];
  let dim = 0;
  for (const e of rawEmbeddings) if (e && e.length > dim) dim = e.length;
  const embeddings = new Float32Array(n * dim);
  if (dim > 0) {
    rawEmbeddings.forEach((e, i) => {
      if (!e || e.length !== dim) {
        throw new ChromaRequestError(`record ${JSON.stringify(ids[i])} has an embedding of ${e?.length ?? 0} dimensions, not ${dim}`, 502);
      }
      embeddings.set(e, i * dim);
    });
  }
  if (cutDocuments && cutDocuments.length !== n) throw new ChromaRequestError("Chroma returned a documents column of the wrong shape", 502);
  let metadatas: string[];
  if (fast) {
    if (fast.values.length !== n) throw new ChromaRequestError("Chroma returned a metadatas column of the wrong shape", 502);
    metadatas = fast.values;
  } else if (body.metadatas === null || body.metadatas === undefined) {
    metadatas = new Array<string>(n).fill("null");
  } else {
    const raw = parseRawJson(topLevelMembers(text).get("metadatas") ?? "null");
    if (!Array.isArray(raw) || raw.length !== n) throw new ChromaRequestError("Chroma returned a metadatas column of the wrong shape", 502);
    metadatas = raw.map(canonicalJson);
  }
  return {
    ids,
    dim,
    embeddings,
    documents: cutDocuments ?? JsonColumn.fromValues(textColumn("documents", body.documents, n)),
    uris: textColumn("uris", body.uris, n),
    metadatas,
  };
}
