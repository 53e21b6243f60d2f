import { ChromaRequestError, ChromaUnavailableError, ResourceLimitError } from "../errors.js";
import { canonicalJson, parseRawJson, RawNumber, type RawJson } from "../json/raw-json.js";
import type { RecordBatch } from "../snapshot/records.js";
import { formatWait } from "../storage/retry.js";
import { parseGetResponseBytes } from "./get-response.js";
import { ResponseBuffers } from "./response-buffers.js";
import { writeBody } from "./write-body.js";

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
      // The runtime's own limit (a Worker's subrequests): Chroma was never asked.
      if (err instanceof ResourceLimitError) throw err;
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
