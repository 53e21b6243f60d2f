import fc from "fast-check";
import { expect, it } from "vitest";
import { parseGetResponse, parseGetResponseBytes } from "../../lib/chroma/get-response.js";
import { ResponseBuffers } from "../../lib/chroma/response-buffers.js";
import { canonicalFlatObjects, canonicalJson, parseRawJson, topLevelMembers, type RawNumber } from "../../lib/json/raw-json.js";

it("keeps a float that looks like an int apart from the int", () => {
  const parsed = parseRawJson('{"f": 2.0, "i": 2, "e": 1e3, "neg": -0.5}') as Record<string, RawNumber>;
  expect(parsed.f!.text).toBe("2.0");
  expect(parsed.i!.text).toBe("2");
  expect(canonicalJson(parsed)).toBe('{"e":1e3,"f":2.0,"i":2,"neg":-0.5}');
});

it("canonical form sorts keys at every level, so key order does not change it", () => {
  expect(canonicalJson(parseRawJson('{"b":{"y":1,"x":[true,null]},"a":"s"}'))).toBe(
    canonicalJson(parseRawJson('{"a":"s","b":{"x":[true,null],"y":1}}')),
  );
});

it("agrees with JSON.parse on arbitrary JSON, and round-trips its canonical text", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const text = JSON.stringify(value);
      const raw = parseRawJson(text);
      expect(JSON.parse(JSON.stringify(raw))).toEqual(JSON.parse(text));
      expect(canonicalJson(parseRawJson(canonicalJson(raw)))).toBe(canonicalJson(raw));
    }),
    { numRuns: 300 },
  );
});

it("rejects malformed input with an offset", () => {
  for (const bad of ["{", '{"a":}', "[1,]", "01", '"\\x"', "nul", "{} x"]) {
    expect(() => parseRawJson(bad), bad).toThrow(/invalid JSON at offset/);
  }
});

it("splits top-level members without parsing them, strings with brackets included", () => {
  const text = '{"ids":["a]","b\\"}"],"embeddings":[[1.0,2.5],[3,4]],"n":null,"m":[{"x":{"y":"}"}}],"k":-1.5e3}';
  const members = topLevelMembers(text);
  expect([...members.keys()]).toEqual(["ids", "embeddings", "n", "m", "k"]);
  expect(JSON.parse(members.get("ids")!)).toEqual(["a]", 'b"}']);
  expect(members.get("embeddings")).toBe("[[1.0,2.5],[3,4]]");
  expect(members.get("n")).toBe("null");
  expect(members.get("k")).toBe("-1.5e3");
  fc.assert(
    fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (obj) => {
      const parsed = topLevelMembers(JSON.stringify(obj, null, 1));
      expect(Object.fromEntries([...parsed].map(([k, v]) => [k, JSON.parse(v)]))).toEqual(JSON.parse(JSON.stringify(obj)));
    }),
    { numRuns: 300 },
  );
});

// Metadata as Chroma writes it: flat objects of scalars, floats that look like ints, any key order.
const numberText = fc.oneof(
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => (Number.isInteger(x) && Math.abs(x) < 1e15 ? `${x}.0` : String(x))),
  fc.constantFrom("1e3", "-0.0", "2.50", "1E-7", "0"),
);
const scalarText = fc.oneof(numberText, fc.constantFrom("true", "false", "null"), fc.string().map((s) => JSON.stringify(s)));
const metadataText = fc.oneof(
  fc.constant("null"),
  fc.uniqueArray(fc.tuple(fc.string(), scalarText), { selector: ([k]) => k, maxLength: 8 }).map((pairs) => `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`),
);

it("the metadata fast path gives exactly the general parser's canonical text, or steps aside", () => {
  fc.assert(
    fc.property(fc.array(metadataText, { maxLength: 12 }), (records) => {
      const column = `[${records.join(",")}]`;
      const general = (parseRawJson(column) as never[]).map(canonicalJson);
      const text = `{"ids":[],"metadatas":${column}}`;
      const fast = canonicalFlatObjects(text, '{"ids":[],"metadatas":'.length);
      // Escaped strings are left to the general parser; everything else takes the fast path.
      if (!column.includes("\\")) expect(fast).not.toBeNull();
      if (fast) {
        expect(fast.values).toEqual(general);
        expect(fast.end).toBe(text.length - 1); // just past the column's ]
      }
    }),
    { numRuns: 500 },
  );
  for (const odd of ['[{"a": 1}]', '[{"a":{"b":1}}]', '[{"a":[1]}]', '[{"a":1,"a":2}]', '[{"a":01}]', '[{"a":"x\\"y"}]', "[1]"]) {
    expect(canonicalFlatObjects(odd, 0), odd).toBeNull();
  }
});

it("parseGetResponse keeps metadata number text whichever path it takes, and checks column shapes", () => {
  const body = (metadatas: string) => `{"ids":["a","b"],"embeddings":[[1.5,2],[3,4]],"documents":["x",null],"uris":null,"included":["metadatas"],"metadatas":${metadatas}}`;
  for (const metadatas of ['[{"w":3.0,"a":"s"},null]', '[{"w": 3.0, "a": "s"}, null]', '[{"w":3.0,"a":"s\\u00e9"},null]']) {
    const batch = parseGetResponse(body(metadatas));
    expect(batch.metadatas[0]).toMatch(/^\{"a":"s.*","w":3\.0\}$/);
    expect(batch.metadatas[1]).toBe("null");
    expect([...batch.embeddings]).toEqual([1.5, 2, 3, 4]);
    expect(batch.documents.values()).toEqual(["x", null]);
    expect(batch.uris).toEqual([null, null]);
  }
  // A "metadatas" key nested before the column (the fast path would find it first): the general path answers.
  const nested = parseGetResponse('{"ids":["a"],"extra":{"metadatas":[]},"metadatas":[{"w":3.0}]}');
  expect(nested.metadatas).toEqual(['{"w":3.0}']);
  expect(() => parseGetResponse(body("[null]"))).toThrow(/metadatas column of the wrong shape/);
  expect(() => parseGetResponse('{"ids":["a"],"documents":[1]}')).toThrow(/not text/);
  expect(() => parseGetResponse('{"ids":["a"],"embeddings":[[1,2]],"documents":["x"],"metadatas":[{"a":1}]')).toThrow(/invalid JSON/);
});

it("parseGetResponseBytes reads embeddings row by row from the bytes, and agrees with the text path on every shape", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);
  const meta = '[{"w":3.0,"embeddings":[1,2]},null]';
  const cases = [
    '{"ids":["a","b"],"embeddings":[[1.5,-2e-3],[3,4]],"documents":["x é",null],"uris":null,"metadatas":[{"k":1},null]}',
    // metadata before embeddings, holding an "embeddings" key of its own
    `{"ids":["a","b"],"metadatas":${meta},"embeddings":[[1,2],[3,4]],"documents":null}`,
    // a metadata key "documents" before the column: the general path
    '{"ids":["a","b"],"metadatas":[{"documents":["m"]},null],"embeddings":[[1,2],[3,4]],"documents":["x",null]}',
    // optional escapes: the general path, which writes them as JSON.stringify does
    '{"ids":["a","b"],"embeddings":[[1,2],[3,4]],"documents":["a\\/b","\\u00e9\\u0041"],"metadatas":null}',
    // whitespace, a null row: the general path
    '{"ids": ["a"], "embeddings": [ [0.25, 1] ], "documents": ["d"], "metadatas": null}',
    '{"ids":[],"embeddings":[],"documents":[],"metadatas":[]}',
    '{"ids":["a"],"embeddings":null,"documents":["d"],"metadatas":[null]}',
  ];
  for (const text of cases) {
    const viaBytes = parseGetResponseBytes(bytes(text));
    const viaText = parseGetResponse(text);
    const plain = (b: typeof viaBytes) => ({ ...b, embeddings: [...b.embeddings], documents: b.documents.values(), documentsJson: new TextDecoder().decode(b.documents.bytes) });
    expect(plain(viaBytes), text).toEqual(plain(viaText));
    expect(viaBytes.documents.values(), text).toEqual((JSON.parse(text) as { documents: unknown[] | null }).documents ?? viaBytes.ids.map(() => null));
  }
  expect(() => parseGetResponseBytes(bytes('{"ids":["a","b"],"embeddings":[[1,2],[3]],"metadatas":null}'))).toThrow(/1 dimensions, not 2/);
  expect(() => parseGetResponseBytes(bytes('{"ids":["a","b"],"embeddings":[[1,2]],"metadatas":null}'))).toThrow(/1 embeddings for 2 records|wrong shape/);
  expect(() => parseGetResponseBytes(bytes('{"ids":["a"],"embeddings":[[1,x]],"metadatas":null}'))).toThrow(/invalid JSON|not JSON numbers/);
  // A raw control character in a document is not JSON: refused, not copied into a chunk.
  expect(() => parseGetResponseBytes(bytes('{"ids":["a"],"embeddings":[[1,2]],"documents":["a\nb"],"metadatas":null}'))).toThrow(/invalid JSON/);
  expect(() => parseGetResponseBytes(bytes('{"ids":["a","b"],"embeddings":[[1,2],[3,4]],"documents":["a"],"metadatas":null}'))).toThrow(/documents column of the wrong shape/);
  fc.assert(
    fc.property(fc.array(fc.array(fc.float({ noNaN: true, noDefaultInfinity: true }), { minLength: 3, maxLength: 3 }), { maxLength: 6 }), (rows) => {
      const text = `{"ids":${JSON.stringify(rows.map((_, i) => `r${i}`))},"embeddings":${JSON.stringify(rows)},"metadatas":null}`;
      expect([...parseGetResponseBytes(bytes(text)).embeddings]).toEqual(rows.flat().map((x) => Math.fround(JSON.parse(JSON.stringify(x)) as number)));
    }),
    { numRuns: 200 },
  );
});

it("ResponseBuffers reads bodies with or without a length, reuses released buffers, and grows when a body outgrows one", async () => {
  const buffers = new ResponseBuffers();
  const parts = [new Uint8Array([1, 2, 3]), new Uint8Array(100_000).fill(7), new Uint8Array([9])];
  const streamed = () =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          for (const p of parts) controller.enqueue(p);
          controller.close();
        },
      }),
    );
  const expected = [...parts.flatMap((p) => [...p])];
  const first = await buffers.read(streamed()); // no content-length: starts small and grows
  expect([...first]).toEqual(expected);
  buffers.release(first);
  const again = await buffers.read(new Response(new Uint8Array([5, 6]), { headers: { "content-length": "2" } }));
  expect(again.buffer).toBe(first.buffer); // the released buffer, reused
  expect([...again]).toEqual([5, 6]);
});
