import { expect } from "vitest";
import { canonicalJson, parseRawJson, topLevelMembers } from "../../lib/json/raw-json.js";

export interface DumpedRecord {
  embedding: number[];
  document: string | null;
  uri: string | null;
  metadata: string;
}

/** A raw get response as a map id -> record, metadata in canonical text (keys sorted, number text kept). */
export function parseDump(text: string): Map<string, DumpedRecord> {
  const m = topLevelMembers(text);
  const ids = JSON.parse(m.get("ids")!) as string[];
  const embeddings = JSON.parse(m.get("embeddings")!) as number[][];
  const documents = JSON.parse(m.get("documents")!) as (string | null)[];
  const uris = JSON.parse(m.get("uris")!) as (string | null)[];
  const metadatas = parseRawJson(m.get("metadatas")!) as unknown[];
  return new Map(
    ids.map((id, i) => [id, { embedding: embeddings[i]!, document: documents[i]!, uri: uris[i]!, metadata: canonicalJson(metadatas[i] as never) }]),
  );
}

/** Every field equal; embeddings bit-exact as float32, or within 4e-7 relative for cosine. */
export function expectSameRecords(before: Map<string, DumpedRecord>, after: Map<string, DumpedRecord>, cosine: boolean): void {
  expect(after.size).toBe(before.size);
  let mismatches = 0;
  for (const [id, b] of before) {
    const a = after.get(id);
    expect(a, `record ${id} missing after restore`).toBeDefined();
    expect(a!.document, `document of ${id}`).toBe(b.document);
    expect(a!.uri, `uri of ${id}`).toBe(b.uri);
    expect(a!.metadata, `metadata of ${id}`).toBe(b.metadata);
    expect(a!.embedding.length).toBe(b.embedding.length);
    for (let k = 0; k < b.embedding.length; k++) {
      const x = Math.fround(b.embedding[k]!);
      const y = Math.fround(a!.embedding[k]!);
      const same = cosine ? Math.abs(x - y) <= 4e-7 * Math.abs(x) + 1e-30 : Object.is(x, y);
      if (!same) mismatches++;
    }
  }
  expect(mismatches, "embedding components that differ").toBe(0);
}
