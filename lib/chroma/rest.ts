import { Buffer } from "node:buffer";
import { ChromaRequestError, ChromaUnavailableError } from "../errors.js";
import { canonicalFlatObjects, canonicalJson, parseRawJson, RawNumber, topLevelMembers, type RawJson } from "../json/raw-json.js";
import { parseFloatRows, type FloatRows } from "../json/float-rows.js";
import { JsonColumn, scanStringColumn, utf8Around } from "../json/json-column.js";
import type { RecordBatch } from "../snapshot/records.js";
import { formatWait } from "../storage/retry.js";

export interface ChromaConfig {
  /** e.g. `http://127.0.0.1:8000` */
  url: string;
  tenant?: string;
  database?: string;
  apiKey?: string;
  /** CHROMA_TIMEOUT: a request (and reading its answer) that takes longer fails as unavailable; default 60 s. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface CollectionInfo {
  id: string;
  name: string;
  /** Canonical JSON text of the collection metadata (`null` when none). */
  metadataJson: string;
  /** Canonical JSON text of the configuration exactly as the server reports it. */
  configurationJson: string;
  /**
   * Canonical JSON text of the collection's `schema` (Chroma 1.2+: index settings per value
   * type and per metadata key), or null when the server reports none (older servers).
   */
  schemaJson: string | null;
  dimension: number | null;
}

const RECORD_FIELDS = ["embeddings", "documents", "metadatas", "uris"];

/**
 * Chroma's REST API (v2), for records and collections.
 *
 * Hand-written over fetch rather than through the `chromadb` client because the client
 * parses with JSON.parse (a metadata float `2.0` comes back as the int `2`), rejects
 * null documents and empty metadata that Chroma itself stores, and tries to instantiate
 * each collection's embedding function. A backup must copy what the server holds, so it
 * reads and writes the server's own JSON. It also runs unchanged on Workers.
 */
export class ChromaRest {
  readonly url: string;
  readonly tenant: string;
  readonly database: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private maxBatch: number | undefined;
  /** The caller's signal (withSignal): an aborted caller's requests stop at once, with its reason. */
  private signal: AbortSignal | undefined;

  constructor(config: ChromaConfig) {
    this.url = config.url.replace(/\/+$/, "");
    this.tenant = config.tenant ?? "default_tenant";
    this.database = config.database ?? "default_database";
    this.apiKey = config.apiKey;
    this.timeoutMs = config.timeoutMs ?? 60_000;
    this.fetchImpl = config.fetch ?? ((input, init) => fetch(input, init));
  }

  /** This client, with every request also stopped when `signal` aborts (a request whose caller left). */
  withSignal(signal: AbortSignal | undefined): ChromaRest {
    if (!signal) return this;
    const bound = Object.create(this) as ChromaRest;
    bound.signal = signal;
    return bound;
  }

  private get base(): string {
    return `${this.url}/api/v2/tenants/${encodeURIComponent(this.tenant)}/databases/${encodeURIComponent(this.database)}`;
  }

  /** Sends a request and returns the response text; maps failures to typed errors. */
  private async request(method: string, path: string, body?: string | Uint8Array<ArrayBuffer>, allow404 = false): Promise<string | null> {
    return this.send(method, path, body, allow404, (response) => response.text());
  }

  private async send<T>(method: string, path: string, body: string | Uint8Array<ArrayBuffer> | undefined, allow404: boolean, read: (response: Response) => Promise<T>): Promise<T | null> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.apiKey) headers["x-chroma-token"] = this.apiKey;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const caller = this.signal;
    caller?.throwIfAborted();
    const timedOut = (err: unknown) => {
      if (caller?.aborted) throw caller.reason;
      if (timeout.aborted) {
        throw new ChromaUnavailableError(`Chroma at ${this.url} did not answer ${method} ${path.replace(/\?.*$/, "")} within ${formatWait(this.timeoutMs)}`, { url: this.url, waitedMs: this.timeoutMs }, { cause: err });
      }
    };
    let response: Response;
    try {
      response = await this.fetchImpl(`${path.startsWith("/api") ? this.url : this.base}${path}`, {
        method,
        headers,
        body,
        signal: caller ? AbortSignal.any([timeout, caller]) : timeout,
      });
    } catch (err) {
      timedOut(err);
      throw new ChromaUnavailableError(`Chroma at ${this.url} is unreachable: ${(err as Error).message}`, { url: this.url }, { cause: err });
    }
    const dropped = (err: unknown): never => {
      timedOut(err);
      throw new ChromaUnavailableError(`Chroma at ${this.url} dropped the response: ${(err as Error).message}`, { url: this.url }, { cause: err });
    };
    if (response.ok) return read(response).catch(dropped);
    const detail = (await response.text().catch(dropped)).slice(0, 500);
    if (response.status === 404 && allow404) return null;
    if (response.status >= 500 || response.status === 429) {
      throw new ChromaUnavailableError(`Chroma at ${this.url} failed ${method} ${path}: ${response.status} ${detail}`, { url: this.url, status: response.status });
    }
    throw new ChromaRequestError(`Chroma refused ${method} ${path}: ${response.status} ${detail}`, response.status);
  }

  async heartbeat(): Promise<void> {
    await this.request("GET", "/api/v2/heartbeat");
  }

  async version(): Promise<string> {
    return JSON.parse((await this.request("GET", "/api/v2/version"))!) as string;
  }

  /** The most records one add/upsert may carry. */
  async maxBatchSize(): Promise<number> {
    if (this.maxBatch === undefined) {
      const checks = JSON.parse((await this.request("GET", "/api/v2/pre-flight-checks"))!) as { max_batch_size?: number };
      this.maxBatch = checks.max_batch_size && checks.max_batch_size > 0 ? checks.max_batch_size : 1000;
    }
    return this.maxBatch;
  }

  async listCollections(): Promise<CollectionInfo[]> {
    const out: CollectionInfo[] = [];
    const pageSize = 100;
    for (let offset = 0; ; offset += pageSize) {
      const page = parseRawJson((await this.request("GET", `/collections?limit=${pageSize}&offset=${offset}`))!);
      if (!Array.isArray(page)) throw new ChromaRequestError("Chroma listed collections in an unexpected shape", 502);
      out.push(...page.map(toCollectionInfo));
      if (page.length < pageSize) return out;
    }
  }

  async getCollection(name: string): Promise<CollectionInfo | null> {
    const text = await this.request("GET", `/collections/${encodeURIComponent(name)}`, undefined, true);
    return text === null ? null : toCollectionInfo(parseRawJson(text));
  }

  /**
   * Creates a collection. With `schemaJson` the schema alone describes its indexes (a
   * server that knows schema refuses a non-default schema beside a non-default
   * configuration); pass it only to a server that reports schema, as older ones ignore it.
   */
  async createCollection(name: string, metadataJson: string, configurationJson: string, schemaJson: string | null = null): Promise<CollectionInfo> {
    const settings = schemaJson === null ? `"configuration":${configurationJson}` : `"schema":${schemaJson}`;
    const body = `{"name":${JSON.stringify(name)},"metadata":${emptyToNull(metadataJson)},${settings}}`;
    return toCollectionInfo(parseRawJson((await this.request("POST", "/collections", body))!));
  }

  /** Deletes by name; a missing collection is not an error. */
  async deleteCollection(name: string): Promise<void> {
    await this.request("DELETE", `/collections/${encodeURIComponent(name)}`, undefined, true);
  }

  async renameCollection(id: string, newName: string): Promise<void> {
    await this.request("PUT", `/collections/${id}`, JSON.stringify({ new_name: newName }));
  }

  async count(id: string): Promise<number> {
    return JSON.parse((await this.request("GET", `/collections/${id}/count`))!) as number;
  }

  /** A page of records, in the server's stable order; `buffers` lends the memory the response is read into (a backup reads many pages). */
  async getRecords(id: string, offset: number, limit: number, buffers = new ResponseBuffers()): Promise<RecordBatch> {
    return this.getRecordsWhere(id, JSON.stringify({ limit, offset, include: RECORD_FIELDS }), buffers);
  }

  /** The records with these ids that still exist. */
  async getRecordsByIds(id: string, ids: string[], buffers = new ResponseBuffers()): Promise<RecordBatch> {
    return this.getRecordsWhere(id, JSON.stringify({ ids, include: RECORD_FIELDS }), buffers);
  }

  /** A page of a collection's ids, in the server's stable order. */
  async listIds(id: string, offset: number, limit: number): Promise<string[]> {
    const body = JSON.parse((await this.request("POST", `/collections/${id}/get`, JSON.stringify({ limit, offset, include: [] })))!) as { ids?: unknown };
    if (!Array.isArray(body.ids) || !body.ids.every((x) => typeof x === "string")) throw new ChromaRequestError("Chroma returned no ids column", 502);
    return body.ids as string[];
  }

  private async getRecordsWhere(id: string, body: string, buffers: ResponseBuffers): Promise<RecordBatch> {
    const bytes = (await this.send("POST", `/collections/${id}/get`, body, false, (response) => buffers.read(response)))!;
    try {
      return parseGetResponseBytes(bytes);
    } finally {
      buffers.release(bytes);
    }
  }

  /** The ids and distances of the `n` nearest records to each query embedding. */
  async queryNearest(id: string, embeddings: number[][], n: number): Promise<{ ids: string[][]; distances: number[][] }> {
    const body = JSON.stringify({ query_embeddings: embeddings, n_results: n, include: ["distances"] });
    const out = JSON.parse((await this.request("POST", `/collections/${id}/query`, body))!) as { ids?: unknown; distances?: unknown };
    if (!Array.isArray(out.ids) || !Array.isArray(out.distances)) throw new ChromaRequestError("Chroma answered a query without ids or distances", 502);
    return { ids: out.ids as string[][], distances: out.distances as number[][] };
  }

  /** Deletes the records with these ids (ids that do not exist are ignored by Chroma). */
  async deleteRecords(id: string, ids: string[]): Promise<void> {
    await this.request("POST", `/collections/${id}/delete`, JSON.stringify({ ids }));
  }

  /** Writes records with `add` (into a fresh collection) or `upsert` (merging). */
  async writeRecords(id: string, batch: RecordBatch, mode: "add" | "upsert"): Promise<void> {
    await this.request("POST", `/collections/${id}/${mode}`, writeBody(batch));
  }
}

/**
 * Buffers that response bodies are read into and given back once parsed, so that paging
 * through a collection reuses a few page-sized buffers instead of allocating one per page
 * (each would live until V8 next collects, which it does only after tens of megabytes).
 */
/** As many as a backup has reads in flight. */
const FREE_BUFFERS = 2;

export class ResponseBuffers {
  private free: Uint8Array[] = [];

  async read(response: Response): Promise<Uint8Array> {
    const declared = Number(response.headers.get("content-length"));
    let buffer = this.take(Number.isSafeInteger(declared) && declared > 0 ? declared : 64 * 1024);
    let filled = 0;
    const reader = response.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.byteLength > buffer.byteLength) {
        const grown = new Uint8Array(Math.max(filled + value.byteLength, buffer.byteLength * 2));
        grown.set(buffer.subarray(0, filled));
        buffer = grown;
      }
      buffer.set(value, filled);
      filled += value.byteLength;
    }
    return buffer.subarray(0, filled);
  }

  /** Gives back a buffer `read` returned, once nothing refers to it. */
  release(bytes: Uint8Array): void {
    if (this.free.length < FREE_BUFFERS) this.free.push(new Uint8Array(bytes.buffer));
  }

  /** A free buffer of at least `size` bytes; free ones that are too small are dropped, not kept beside a new one. */
  private take(size: number): Uint8Array {
    const buffer = this.free.pop();
    return buffer && buffer.byteLength >= size ? buffer : new Uint8Array(size);
  }
}

function emptyToNull(json: string): string {
  return json === "{}" ? "null" : json;
}

function toCollectionInfo(raw: RawJson): CollectionInfo {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw) || raw instanceof RawNumber || typeof raw.id !== "string" || typeof raw.name !== "string") {
    throw new ChromaRequestError("Chroma described a collection in an unexpected shape", 502);
  }
  const dimension = raw.dimension;
  return {
    id: raw.id,
    name: raw.name,
    metadataJson: canonicalJson(raw.metadata ?? null),
    configurationJson: canonicalJson(raw.configuration_json ?? null),
    schemaJson: raw.schema === undefined || raw.schema === null ? null : canonicalJson(raw.schema),
    dimension: dimension instanceof RawNumber ? Number(dimension.text) : null,
  };
}

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

function base64(bytes: Uint8Array): string {
  const B = (globalThis as { Buffer?: { from(b: ArrayBufferLike, o: number, l: number): { toString(e: string): string } } }).Buffer;
  if (B) return B.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * The add/upsert body. Embeddings go as base64 float32 (what the official client sends
 * when the server supports it: exact, and far smaller than decimal text); metadata as its
 * stored JSON text, so floats keep their type; documents as the JSON text they are kept in.
 */
export function writeBody(batch: RecordBatch): Uint8Array<ArrayBuffer> {
  const embeddings: string[] = [];
  if (batch.dim > 0) {
    for (let i = 0; i < batch.ids.length; i++) {
      const bytes = new Uint8Array(batch.embeddings.buffer, batch.embeddings.byteOffset + i * batch.dim * 4, batch.dim * 4);
      embeddings.push(`"${base64(bytes)}"`);
    }
  }
  return utf8Around(
    `{"ids":${JSON.stringify(batch.ids)},"embeddings":${batch.dim > 0 ? `[${embeddings.join(",")}]` : "null"},"documents":[`,
    batch.documents.bytes,
    `],"uris":${JSON.stringify(batch.uris)},"metadatas":[${batch.metadatas.join(",")}]}`,
  );
}
