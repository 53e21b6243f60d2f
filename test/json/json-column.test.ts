import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { JsonColumn, scanStringColumn } from "../../lib/json/json-column.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encode = (text: string) => encoder.encode(text);
const latin1 = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1");

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const hasLoneSurrogate = (s: string | null) => s !== null && LONE_SURROGATE.test(s);

/** Characters JSON treats specially, plus multi-byte and non-BMP ones, mixed with arbitrary code units. */
const special = fc.constantFrom('"', "\\", "/", "\n", "\t", "\r", "\b", "\f", "\u000b", "\u0000", "\u001f", "\u007f", "\u2028", "é", "€", "😀", "\ud800", "\udfff", "\udbff\udfff");
const wellFormedSpecial = fc.constantFrom('"', "\\", "/", "\n", "\t", "\r", "\b", "\f", "\u000b", "\u0000", "\u001f", "\u007f", "\u2028", "é", "€", "😀", "\udbff\udfff");
/** Any string, lone surrogates included. */
const anyString = fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: fc.oneof(special, fc.string({ unit: "binary", minLength: 1, maxLength: 1 })) }));
/** Strings that are well-formed UTF-16 (no lone surrogates). */
const wellFormedString = fc.oneof(fc.string({ unit: "grapheme" }), fc.string({ unit: fc.oneof(wellFormedSpecial, fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 })) }));
const anyValues = fc.array(fc.option(anyString, { nil: null }), { maxLength: 12 });
const wellFormedValues = fc.array(fc.option(wellFormedString, { nil: null }), { maxLength: 12 });

/** Checks every accessor of `column` against the plain array `values`. */
function expectColumn(column: JsonColumn, values: (string | null)[]): void {
  expect(column.length).toBe(values.length);
  expect(column.values()).toEqual(values);
  for (let i = 0; i < values.length; i++) {
    expect(decoder.decode(column.text(i))).toBe(JSON.stringify(values[i]));
    expect(column.textLength(i)).toBe(column.text(i).byteLength);
    expect(column.textLength(i)).toBe(encode(JSON.stringify(values[i])).byteLength);
  }
}

describe("scanStringColumn on what JSON.stringify writes", () => {
  it("reads any column of strings and nulls, lone surrogates included", () => {
    fc.assert(
      fc.property(anyValues, (values) => {
        const bytes = encode(JSON.stringify(values));
        const scanned = scanStringColumn(bytes, 0);
        expect(scanned).not.toBeNull();
        expect(scanned!.end).toBe(bytes.byteLength);
        expectColumn(scanned!.column, values);
        // JSON.stringify writes \u only for lone surrogates that the scanner counts as optional.
        expect(scanned!.canonical).toBe(!values.some(hasLoneSurrogate));
      }),
      { numRuns: 400 },
    );
  });

  it("calls well-formed strings canonical", () => {
    fc.assert(
      fc.property(wellFormedValues, (values) => {
        const scanned = scanStringColumn(encode(JSON.stringify(values)), 0);
        expect(scanned).not.toBeNull();
        expect(scanned!.canonical).toBe(true);
        expectColumn(scanned!.column, values);
      }),
      { numRuns: 300 },
    );
  });

  it("calls a lone surrogate not canonical (JSON.stringify writes it as an escape)", () => {
    for (const lone of ["\ud800", "\udfff", "a\udc00b", "\ud83d", "x\ude00"]) {
      const values = ["ok", lone, null];
      const scanned = scanStringColumn(encode(JSON.stringify(values)), 0);
      expect(scanned, JSON.stringify(lone)).not.toBeNull();
      expect(scanned!.canonical).toBe(false);
      expectColumn(scanned!.column, values);
    }
  });

  it("reads an empty column", () => {
    const scanned = scanStringColumn(encode("[]"), 0);
    expect(scanned).not.toBeNull();
    expect(scanned!.end).toBe(2);
    expect(scanned!.canonical).toBe(true);
    expect(scanned!.column.length).toBe(0);
    expect(scanned!.column.values()).toEqual([]);
  });

  it("scans at an offset inside a bigger buffer and stops just past the column's ]", () => {
    fc.assert(
      fc.property(anyValues, fc.boolean(), (values, asBuffer) => {
        const prefix = '{"ids":["]","[\\""],"documents":';
        const text = `${prefix}${JSON.stringify(values)},"x":[1,"]"]}`;
        const utf8 = encode(text);
        const bytes = asBuffer ? Buffer.from(utf8) : utf8;
        const pos = encode(prefix).byteLength;
        const scanned = scanStringColumn(bytes, pos);
        expect(scanned).not.toBeNull();
        expect(scanned!.end).toBe(pos + encode(JSON.stringify(values)).byteLength);
        expect(latin1(bytes.subarray(scanned!.end))).toBe(',"x":[1,"]"]}');
        expectColumn(scanned!.column, values);
      }),
      { numRuns: 200 },
    );
  });
});

/** One value's JSON text, with each code point written in a form picked by `choices`: as JSON.stringify would, or escaped (lower or upper hex, `\/`). */
function writeString(value: string, choices: number[]): string {
  let out = '"';
  let k = 0;
  for (const ch of value) {
    const choice = choices[k++ % choices.length]!;
    const units = [...Array(ch.length).keys()].map((j) => ch.charCodeAt(j).toString(16).padStart(4, "0"));
    if (choice === 1) out += units.map((h) => `\\u${h}`).join("");
    else if (choice === 2) out += units.map((h) => `\\u${h.toUpperCase()}`).join("");
    else if (choice === 3 && ch === "/") out += "\\/";
    else out += JSON.stringify(ch).slice(1, -1);
  }
  return `${out}"`;
}

describe("scanStringColumn on other valid encodings", () => {
  it("reads values however they are escaped, and is canonical exactly when the text is JSON.stringify's", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.option(fc.oneof(anyString, fc.string({ unit: special, maxLength: 6 })), { nil: null }), fc.array(fc.nat({ max: 5 }), { minLength: 1, maxLength: 8 })), {
          maxLength: 8,
        }),
        (elements) => {
          const values = elements.map(([v]) => v);
          const text = `[${elements.map(([v, choices]) => (v === null ? "null" : writeString(v, choices))).join(",")}]`;
          expect(JSON.parse(text)).toEqual(values); // the generator writes valid JSON
          const scanned = scanStringColumn(encode(text), 0);
          expect(scanned, text).not.toBeNull();
          expect(scanned!.end).toBe(encode(text).byteLength);
          expect(scanned!.column.values()).toEqual(values);
          expect(scanned!.canonical, text).toBe(text === JSON.stringify(values) && !values.some(hasLoneSurrogate));
        },
      ),
      { numRuns: 400 },
    );
  });

  it("flags optional escapes as not canonical", () => {
    const cases: [string, string][] = [
      ['["\\/"]', "/"],
      ['["\\u00e9"]', "é"],
      ['["\\u0041"]', "A"],
      ['["\\u001F"]', "\u001f"],
      ['["\\u000a"]', "\n"],
      ['["\\u0009"]', "\t"],
      ['["\\u0008"]', "\b"],
      ['["\\u000c"]', "\f"],
      ['["\\u000d"]', "\r"],
      ['["\\u0022"]', '"'],
      ['["\\u005c"]', "\\"],
      ['["\\u007f"]', "\u007f"],
      ['["\\ud83d\\ude00"]', "😀"],
      ['["\\uD800"]', "\ud800"],
      ['["ok","\\u00E9x",null]', "éx"],
    ];
    for (const [text, value] of cases) {
      const scanned = scanStringColumn(encode(text), 0);
      expect(scanned, text).not.toBeNull();
      expect(scanned!.canonical, text).toBe(false);
      expect(scanned!.end).toBe(text.length);
      expect(scanned!.column.values()).toContain(value);
      expect(scanned!.column.values()).toEqual(JSON.parse(text));
    }
  });

  it("calls JSON.stringify's own escapes canonical", () => {
    for (const text of ['["\\u001f"]', '["\\n\\t\\"\\\\\\b\\f\\r"]', '["\\u0000\\u000b\\u000e"]', '[null,"",null]', '["é😀\u2028"]']) {
      const scanned = scanStringColumn(encode(text), 0);
      expect(scanned, text).not.toBeNull();
      expect(scanned!.canonical, text).toBe(true);
      const values = JSON.parse(text) as (string | null)[];
      expect(JSON.stringify(values)).toBe(text); // the premise: this is JSON.stringify's text
      expectColumn(scanned!.column, values);
    }
  });
});

describe("scanStringColumn rejections", () => {
  const rejected: [string, Uint8Array][] = [
    ["raw newline", encode('["a\nb"]')],
    ["raw tab", encode('["a\tb"]')],
    ["raw 0x1f", encode('["a\u001fb"]')],
    ["raw NUL", encode('["\u0000"]')],
    ["\\x", encode('["\\x41"]')],
    ["\\' escape", encode('["\\\'"]')],
    ["\\U", encode('["\\U0041"]')],
    ["backslash at end of input", encode('["\\')],
    ["short \\u12", encode('["\\u12"]')],
    ["\\u12 at end of input", encode('["\\u12')],
    ["\\u12g4", encode('["\\u12g4"]')],
    ["unterminated string", encode('["abc')],
    ["unterminated string before ]", encode('["abc]')],
    ["missing ]", encode('["a","b"')],
    ["missing ] after null", encode("[null")],
    ["trailing comma", encode('["a",]')],
    ["leading comma", encode('[,"a"]')],
    ["double comma", encode('["a",,"b"]')],
    ["missing comma", encode('["a""b"]')],
    ["number", encode("[1]")],
    ["true", encode("[true]")],
    ["object", encode("[{}]")],
    ["nested array", encode('[["a"]]')],
    ["space after [", encode('[ "a"]')],
    ["space after comma", encode('["a", "b"]')],
    ["space before ]", encode('["a" ]')],
    ["newline between elements", encode('["a",\n"b"]')],
    ["nul", encode("[nul]")],
    ["nul at end of input", encode("[nul")],
    ["Null", encode("[Null]")],
    ["nulll", encode("[nulll]")],
    ["single-quoted", encode("['a']")],
    ["0xff byte", Uint8Array.from([0x5b, 0x22, 0xff, 0x22, 0x5d])],
    ["truncated 3-byte sequence", Uint8Array.from([0x5b, 0x22, 0xe2, 0x82, 0x22, 0x5d])],
    ["overlong 0xc0 0xaf", Uint8Array.from([0x5b, 0x22, 0xc0, 0xaf, 0x22, 0x5d])],
    ["UTF-8-encoded surrogate", Uint8Array.from([0x5b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x5d])],
    ["lone continuation byte", Uint8Array.from([0x5b, 0x22, 0x61, 0x80, 0x22, 0x5d])],
    ["not starting with [", encode('"a"')],
    ["leading space", encode(' ["a"]')],
    ["object", encode('{"a":"b"}')],
    ["null column", encode("null")],
    ["empty input", new Uint8Array(0)],
    ["just [", encode("[")],
  ];
  for (const [name, bytes] of rejected) {
    it(`rejects: ${name}`, () => {
      expect(scanStringColumn(bytes, 0)).toBeNull();
      // The same bytes at an offset, with a valid continuation after them, are rejected too.
      const shifted = new Uint8Array([...encode('{"d":'), ...bytes, ...encode(',"e":["x"]}')]);
      expect(scanStringColumn(shifted, 5)).toBeNull();
    });
  }

  it("rejects a position past the end or not at a [", () => {
    const bytes = encode('{"d":["a"]}');
    expect(scanStringColumn(bytes, 0)).toBeNull();
    expect(scanStringColumn(bytes, 4)).toBeNull();
    expect(scanStringColumn(bytes, bytes.byteLength)).toBeNull();
    expect(scanStringColumn(bytes, 5)).not.toBeNull();
  });

  it("agrees with a fatal UTF-8 decode plus JSON.parse on mutated columns", () => {
    // Mutated JSON.stringify output: the scanner accepts exactly what a fatal UTF-8 decode
    // plus JSON.parse accept as a whitespace-free array of strings and nulls.
    const tokens = ["[", "]", '"', ",", "\\", "\\u", "00", "1f", "D8", "0a", "null", "nul", "a", " ", "\n", "/", "é", "😀", "1", "{}", "\u0001"];
    const token = fc.oneof(
      fc.constantFrom(...tokens).map(encode),
      fc.constantFrom(0xff, 0xc0, 0x80, 0xe2, 0xed, 0xf0).map((b) => Uint8Array.of(b)),
    );
    fc.assert(
      fc.property(anyValues, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 3 }), token), { maxLength: 3 }), (values, mutations) => {
        let bytes = encode(JSON.stringify(values));
        for (const [at, deleteCount, insert] of mutations) {
          const p = at % (bytes.byteLength + 1);
          bytes = new Uint8Array([...bytes.subarray(0, p), ...insert, ...bytes.subarray(Math.min(bytes.byteLength, p + deleteCount))]);
        }
        const expected = reference(bytes);
        const scanned = scanStringColumn(bytes, 0);
        if (expected) {
          expect(scanned, latin1(bytes)).not.toBeNull();
          expect(scanned!.end).toBe(bytes.byteLength);
          expect(scanned!.column.values()).toEqual(expected);
        }
        if (scanned) {
          // Whatever it accepts is a valid column up to `end`, and these are its values.
          const prefix = reference(bytes.subarray(0, scanned.end));
          expect(prefix, latin1(bytes)).not.toBeNull();
          expect(scanned.column.values()).toEqual(prefix);
          for (let i = 0; i < prefix!.length; i++) expect(JSON.parse(decoder.decode(scanned.column.text(i)))).toBe(prefix![i]);
        }
      }),
      { numRuns: 1500 },
    );
  });
});

/** The reference: the values when `bytes` are UTF-8 of a JSON array of strings and nulls with no whitespace between tokens, else null. */
function reference(bytes: Uint8Array): (string | null)[] | null {
  let text: string;
  let parsed: unknown;
  try {
    text = decoder.decode(bytes);
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  if (!Array.isArray(parsed) || !parsed.every((v) => v === null || typeof v === "string")) return null;
  // JSON.parse succeeded, so quotes and escapes are well formed: find whitespace outside strings.
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === " " || c === "\n" || c === "\t" || c === "\r") return null;
  }
  return parsed as (string | null)[];
}

describe("JsonColumn operations", () => {
  const column = (values: (string | null)[]) => JsonColumn.fromValues(values);

  it("slice agrees with Array.prototype.slice", () => {
    fc.assert(
      fc.property(anyValues, fc.nat(), fc.nat(), (values, a, b) => {
        const start = a % (values.length + 1);
        const end = b % (values.length + 1);
        const sliced = column(values).slice(start, end);
        expectColumn(sliced, values.slice(start, end));
        // Slices of slices too.
        if (sliced.length > 1) expectColumn(sliced.slice(1, sliced.length), values.slice(start + 1, end));
      }),
      { numRuns: 300 },
    );
  });

  it("pick agrees with mapping the indexes, repeats and any order included", () => {
    fc.assert(
      fc.property(
        anyValues.filter((v) => v.length > 0),
        fc.array(fc.nat(), { maxLength: 15 }),
        (values, raw) => {
          const indexes = raw.map((i) => i % values.length);
          expectColumn(column(values).pick(indexes), indexes.map((i) => values[i]!));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("concat agrees with Array.prototype.concat, empty columns and pieces included", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(anyValues, fc.constant([] as (string | null)[])), { maxLength: 6 }), fc.boolean(), (pieces, useEmpty) => {
        const columns = pieces.map((p) => (p.length === 0 && useEmpty ? JsonColumn.empty : column(p)));
        expectColumn(JsonColumn.concat(columns), pieces.flat());
      }),
      { numRuns: 300 },
    );
  });

  it("concat of slices of one column puts it back together", () => {
    fc.assert(
      fc.property(anyValues, fc.array(fc.nat(), { maxLength: 5 }), (values, cuts) => {
        const points = [0, ...cuts.map((c) => c % (values.length + 1)).sort((x, y) => x - y), values.length];
        const whole = column(values);
        const pieces = points.slice(1).map((end, k) => whole.slice(points[k]!, end));
        const joined = JsonColumn.concat(pieces);
        expectColumn(joined, values);
        expect(latin1(joined.bytes)).toBe(latin1(whole.bytes));
      }),
      { numRuns: 200 },
    );
  });

  it("handles the edges: empty, empty pieces, one element, empty strings", () => {
    expectColumn(JsonColumn.empty, []);
    expectColumn(JsonColumn.concat([]), []);
    expectColumn(JsonColumn.concat([JsonColumn.empty, JsonColumn.empty]), []);
    expectColumn(JsonColumn.concat([JsonColumn.empty, column([""]), JsonColumn.empty, column([null, ""])]), ["", null, ""]);
    expectColumn(JsonColumn.empty.slice(0, 0), []);
    expectColumn(JsonColumn.empty.pick([]), []);
    expectColumn(column(["a", "b"]).slice(1, 1), []);
    expectColumn(column(["a", "b"]).slice(2, 1), []);
    expectColumn(column(["a", "b"]).pick([]), []);
    expectColumn(column([""]), [""]);
    expectColumn(column([null]), [null]);
    expectColumn(column(["", "", ""]).slice(1, 3), ["", ""]);
    expectColumn(JsonColumn.concat([column(["x"]).slice(0, 0), column([null])]), [null]);
  });

  it("copy is independent of the source bytes, for a Uint8Array and a Buffer source", () => {
    fc.assert(
      fc.property(anyValues.filter((v) => v.length > 0), fc.boolean(), fc.nat(), fc.nat(), (values, asBuffer, a, b) => {
        const prefix = '{"documents":';
        const utf8 = encode(`${prefix}${JSON.stringify(values)}}`);
        const bytes = asBuffer ? Buffer.from(utf8) : utf8;
        const scanned = scanStringColumn(bytes, encode(prefix).byteLength)!;
        const start = a % values.length;
        const end = start + 1 + (b % (values.length - start));
        const copied = scanned.column.slice(start, end).copy();
        const whole = scanned.column.copy();
        bytes.fill(0x78); // the reused buffer is overwritten by the next page
        expectColumn(copied, values.slice(start, end));
        expectColumn(whole, values);
        // The uncopied column did share the source (so the overwrite was a real test).
        expect(scanned.column.text(0).every((x) => x === 0x78)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("copy's bytes are a plain Uint8Array of their own", () => {
    const source = Buffer.from('["abc",null]');
    const copied = scanStringColumn(source, 0)!.column.copy();
    expect(copied.bytes.buffer).not.toBe(source.buffer);
    expect(copied.bytes.byteOffset).toBe(0);
    expect(copied.bytes.byteLength).toBe('"abc",null'.length);
  });

  it("fromValues round-trips any strings and nulls and never throws", () => {
    fc.assert(
      fc.property(anyValues, (values) => {
        const c = JsonColumn.fromValues(values);
        expectColumn(c, values);
        expect(latin1(c.bytes)).toBe(latin1(encode(JSON.stringify(values).slice(1, -1))));
      }),
      { numRuns: 300 },
    );
    expectColumn(JsonColumn.fromValues([]), []);
    expectColumn(JsonColumn.fromValues(["\ud800", "\udfff", null, "\u0000"]), ["\ud800", "\udfff", null, "\u0000"]);
  });
});
