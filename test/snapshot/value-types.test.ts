import { describe, expect, it } from "vitest";
import { parseGetResponse, parseGetResponseBytes } from "../../lib/chroma/get-response.js";
import { writeBody } from "../../lib/chroma/write-body.js";
import { canonicalJson, parseRawJson } from "../../lib/json/raw-json.js";
import { decodeChunk, encodeChunk, sha256Hex } from "../../lib/snapshot/chunk.js";

/** Every metadata value type Chroma has, as Chroma writes it; each must come back as the same text. */
const VALUES: Record<string, string> = {
  int: "7",
  negative: "-3",
  float: "2.5",
  floatWithZero: "2.0",
  negZero: "-0.0",
  exponent: "1.5e-7",
  int64: "9007199254740993",
  int64Min: "-9223372036854775808",
  bool: "true",
  string: '"naïve \\"q\\" 😀"',
  ints: "[1,2,3]",
  floats: "[1.0,2.5,-0.0]",
  int64s: "[9007199254740993,-9223372036854775807]",
  strings: '["a","b\\\\c",""]',
  bools: "[true,false]",
  empty: "[]",
  sparse: '{"#type":"sparse_vector","indices":[0,5,9007199254740993],"values":[0.5,1.0,-2.25e-3]}',
};

const sorted = Object.keys(VALUES).sort();
const metadata = `{${sorted.map((k) => `${JSON.stringify(k)}:${VALUES[k]}`).join(",")}}`;

describe("metadata value types", () => {
  it("canonical JSON keeps every value's text", () => {
    expect(canonicalJson(parseRawJson(metadata))).toBe(metadata);
    // Key order from the server does not matter; value text does.
    const shuffled = `{${[...sorted].reverse().map((k) => `${JSON.stringify(k)}: ${VALUES[k]}`).join(", ")}}`;
    expect(canonicalJson(parseRawJson(shuffled))).toBe(metadata);
  });

  it("a get response, a chunk and a write body carry them exactly", async () => {
    const response = `{"ids":["a","b","c"],"embeddings":[[0.5],[1.5],[2.5]],"documents":["x",null,"z"],"uris":[null,null,"u"],"metadatas":[${metadata},null,{"f":2.0,"list":[2.0,3]}],"include":[]}`;
    for (const batch of [parseGetResponse(response), parseGetResponseBytes(new TextEncoder().encode(response))]) {
      expect(batch.metadatas).toEqual([metadata, "null", '{"f":2.0,"list":[2.0,3]}']);
      const encoded = await encodeChunk(batch);
      const decoded = await decodeChunk(encoded.bytes, { hash: sha256Hex(encoded.bytes), records: 3, decodedBytes: encoded.decodedBytes, collection: "c", dimension: 1 });
      expect(decoded.metadatas).toEqual(batch.metadatas);
      const body = new TextDecoder().decode(writeBody(decoded));
      expect(body).toContain(`"metadatas":[${metadata},null,{"f":2.0,"list":[2.0,3]}]`);
    }
  });
});
