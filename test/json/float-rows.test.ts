import fc from "fast-check";
import { expect, it } from "vitest";
import { parseFloatRows } from "../../lib/json/float-rows.js";

const encode = (text: string) => new TextEncoder().encode(text);
/** What JSON.parse and a Float32Array store make of the same text: the reference. */
const reference = (text: string) => Float32Array.from((JSON.parse(text) as number[][]).flat());

/** The shortest decimal that reads back as the float32 `x` (what Chroma writes). */
function shortest(x: number): string {
  for (let p = 1; p <= 9; p++) {
    const s = x.toPrecision(p);
    if (Math.fround(Number(s)) === x) return String(Number(s));
  }
  return String(x);
}

const float32 = fc.integer({ min: 0, max: 0xffffffff }).map((bits) => new Float32Array(new Uint32Array([bits]).buffer)[0]!).filter(Number.isFinite);
/** Unit-scale floats, as embeddings hold. */
const unitFloat32 = fc.oneof(fc.double({ min: -1, max: 1, noNaN: true }).map(Math.fround), float32);
const written = (x: number) =>
  fc.constantFrom(shortest(x), String(x), x.toExponential(), x.toExponential().toUpperCase(), x.toExponential().replace("e-", "e-0"), x.toExponential().replace("e+", "e"), x.toFixed(30));

it("reads rows of numbers exactly as JSON.parse followed by a float32 store does, however they are written", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 6 }), fc.array(fc.array(float32.chain(written), { minLength: 6, maxLength: 6 }), { minLength: 1, maxLength: 5 }), (dim, rows) => {
      const text = `[${rows.map((r) => `[${r.slice(0, dim).join(",")}]`).join(",")}]`;
      const parsed = parseFloatRows(encode(text), 0)!;
      expect(parsed, text).not.toBeNull();
      expect(parsed.rows).toBe(rows.length);
      expect(parsed.dim).toBe(dim);
      expect(parsed.end).toBe(text.length);
      const expected = reference(text);
      expect(parsed.values.length).toBe(expected.length);
      for (let i = 0; i < expected.length; i++) expect(Object.is(parsed.values[i], expected[i]), `${text} at ${i}`).toBe(true);
    }),
    { numRuns: 500 },
  );
});

it("rounds numbers near the middle between two float32s as JSON.parse does (one correctly rounded double)", () => {
  // The midpoint of two neighbouring float32s, written to 15-16 digits: which float32 it
  // becomes depends on the last bit of the double, so a conversion off by one ulp shows.
  const nearMidpoint = fc.tuple(fc.integer({ min: 0x3a800000, max: 0x3f7fffff }), fc.integer({ min: 15, max: 16 }), fc.integer({ min: -3, max: 3 })).map(([bits, digits, nudge]) => {
    const [a, b] = new Float32Array(new Uint32Array([bits, bits + 1]).buffer);
    const text = ((a! + b!) / 2).toPrecision(digits);
    const last = Number(text.at(-1)) + nudge;
    return last >= 0 && last <= 9 ? text.slice(0, -1) + String(last) : text;
  });
  fc.assert(
    fc.property(fc.array(nearMidpoint, { minLength: 1, maxLength: 16 }), (numbers) => {
      const text = `[[${numbers.join(",")}]]`;
      expect([...parseFloatRows(encode(text), 0)!.values], text).toEqual([...reference(text)]);
    }),
    { numRuns: 2000 },
  );
});

it("reads embeddings as Chroma writes them bit-exact, -0 included", () => {
  fc.assert(
    fc.property(fc.array(fc.array(unitFloat32, { minLength: 8, maxLength: 8 }), { minLength: 1, maxLength: 8 }), (rows) => {
      const text = `[${rows.map((r) => `[${r.map((x) => (Object.is(x, -0) ? "-0.0" : shortest(x))).join(",")}]`).join(",")}]`;
      const parsed = parseFloatRows(encode(text), 0);
      expect(parsed, text).not.toBeNull();
      const bits = new Uint32Array(parsed!.values.buffer, 0, parsed!.values.length);
      expect([...bits]).toEqual([...new Uint32Array(Float32Array.from(rows.flat()).buffer)]);
    }),
    { numRuns: 300 },
  );
  const zeros = parseFloatRows(encode("[[-0.0,0,-0,0.0e5]]"), 0)!;
  expect([...zeros.values].map((x) => Object.is(x, -0))).toEqual([true, false, true, false]);
});

it("says where the value ends inside a bigger text, and reports the first row of another length", () => {
  const text = '{"embeddings":[[1.5,2],[3,4.25e1]],"x":1}';
  const at = text.indexOf("[[");
  const parsed = parseFloatRows(encode(text), at)!;
  expect(parsed.end).toBe(text.indexOf(',"x"'));
  expect([...parsed.values]).toEqual([1.5, 2, 3, 42.5]);
  expect(parseFloatRows(encode("[]"), 0)).toMatchObject({ rows: 0, dim: 0, end: 2, badRow: -1 });
  expect(parseFloatRows(encode("[[1,2],[3],[4,5,6]]"), 0)).toMatchObject({ rows: 3, dim: 2, badRow: 1, badRowLength: 1 });
});

it("leaves anything that is not plain JSON numbers to JSON.parse", () => {
  const refused = [
    "[[01]]", "[[1.]]", "[[.5]]", "[[+1]]", "[[1e]]", "[[1e+]]", "[[-]]", "[[NaN]]", "[[Infinity]]", "[[1,]]", "[[,1]]", "[[]]",
    "[[1] ]", "[ [1]]", "[[1 ,2]]", "[[1]", "[[1", "[[1],", "[1,2]", "[[1],[2]", '[["1"]]', "[[null]]", "[[[1]]]", "x",
    "[[1e99999]]",
  ];
  for (const text of refused) expect(parseFloatRows(encode(text), 0), text).toBeNull();
  // Past Clinger's fast path (more than 2^53 as digits, powers of ten past 1e22): still exact.
  for (const text of ["[[1e22,1e-22,9007199254740991]]", "[[1E+2,2e-0,3.000e1]]", "[[12345678901234567890,1e23,1e-23,-1e-45,1e400,4.9e-324,1.17549435e-38]]"]) {
    expect([...parseFloatRows(encode(text), 0)!.values], text).toEqual([...reference(text)]);
  }
});
