import { Buffer, isUtf8 } from "node:buffer";
import { scanStringColumn, utf8Around } from "../json/json-column.js";
import type { Corrupt } from "./chunk-layout.js";
import type { RecordBatch } from "./records.js";

/**
 * A chunk's text section (docs/FORMAT.md): UTF-8 lines of JSON ids, JSON documents, JSON
 * uris, then one line per record: its metadata as JSON.
 */

// ignoreBOM: true keeps a leading U+FEFF as a character, so the bytes decode to exactly what they hold.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text section, in a buffer of its own: the documents column's bytes as they are, between the other lines encoded. */
export function encodeText(batch: RecordBatch): Uint8Array {
  const metadatas = batch.metadatas.length > 0 ? `\n${batch.metadatas.join("\n")}` : "";
  return utf8Around(`${JSON.stringify(batch.ids)}\n[`, batch.documents.bytes, `]\n${JSON.stringify(batch.uris)}${metadatas}`);
}

const isColumn = (v: unknown, n: number, nullable: boolean): v is (string | null)[] =>
  Array.isArray(v) && v.length === n && v.every((x) => typeof x === "string" || (nullable && x === null));

/** The lines a verify checks without building records: UTF-8, `n + 3` lines, well-formed id and uri columns. */
export function checkText(bytes: Uint8Array, n: number, corrupt: Corrupt): void {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // Buffer's indexOf is native
  if (!isUtf8(text)) corrupt("text section is not UTF-8");
  const ends: number[] = [];
  for (let i = text.indexOf(0x0a); i !== -1; i = text.indexOf(0x0a, i + 1)) ends.push(i);
  if (ends.length + 1 !== 3 + n) corrupt(`text section has ${ends.length + 1} lines, expected ${3 + n}`);
  const line = (k: number) => decoder.decode(text.subarray(k === 0 ? 0 : ends[k - 1]! + 1, ends[k]));
  let ids: unknown, uris: unknown;
  try {
    ids = JSON.parse(line(0));
    uris = JSON.parse(line(2));
  } catch (err) {
    return corrupt("text section is not valid JSON", err);
  }
  if (!isColumn(ids, n, false)) corrupt("ids column is malformed");
  if (!isColumn(uris, n, true)) corrupt("uris column is malformed");
}

export function decodeText(bytes: Uint8Array, n: number, corrupt: Corrupt): Pick<RecordBatch, "ids" | "documents" | "uris" | "metadatas"> {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength); // Buffer's indexOf is native
  const first = text.indexOf(0x0a);
  const second = first < 0 ? -1 : text.indexOf(0x0a, first + 1);
  const third = second < 0 ? -1 : text.indexOf(0x0a, second + 1);
  if (third < 0 && n > 0) corrupt(`text section has fewer than ${3 + n} lines`);
  let ids: unknown, uris: unknown, metadatas: string[];
  try {
    ids = JSON.parse(decoder.decode(text.subarray(0, first)));
    uris = JSON.parse(decoder.decode(text.subarray(second + 1, third < 0 ? text.byteLength : third)));
    metadatas = third < 0 ? [] : decoder.decode(text.subarray(third + 1)).split("\n");
  } catch (err) {
    return corrupt(err instanceof SyntaxError ? "text section is not valid JSON" : "text section is not UTF-8", err);
  }
  if (metadatas.length !== n) corrupt(`text section has ${3 + metadatas.length} lines, expected ${3 + n}`);
  // The documents line is checked as JSON.parse would and kept as bytes (docs: JsonColumn).
  const documents = scanStringColumn(text, first + 1);
  if (!documents || documents.end !== second || documents.column.length !== n) corrupt("documents column is malformed");
  if (!isColumn(ids, n, false)) corrupt("ids column is malformed");
  if (!isColumn(uris, n, true)) corrupt("uris column is malformed");
  return { ids: ids as string[], documents: documents!.column, uris: uris as (string | null)[], metadatas };
}
