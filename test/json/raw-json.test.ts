import fc from "fast-check";
import { expect, it } from "vitest";
import { canonicalJson, parseRawJson, topLevelMembers, type RawNumber } from "../../lib/json/raw-json.js";

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
