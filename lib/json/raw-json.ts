/**
 * JSON that keeps each number's source text. Chroma stores a metadata float `2.0`
 * apart from the int `2`; `JSON.parse` turns both into `2`, so a restore through it
 * would change types. Node 20's JSON.parse has no access to source text, so this small
 * parser is hand-written; it is used only on metadata and collection descriptions,
 * never on the bulky embedding arrays.
 */
export class RawNumber {
  constructor(readonly text: string) {}
  toJSON(): number {
    return Number(this.text);
  }
}

export type RawJson = null | boolean | string | RawNumber | RawJson[] | { [key: string]: RawJson };

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
// eslint-disable-next-line no-control-regex -- JSON forbids raw control characters in strings
const STRING = /"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;
const WHITESPACE = /[ \t\n\r]*/y;

export class RawJsonError extends SyntaxError {}

export function parseRawJson(text: string): RawJson {
  let pos = 0;

  const fail = (what: string): never => {
    throw new RawJsonError(`invalid JSON at offset ${pos}: ${what}`);
  };
  const skipWhitespace = () => {
    WHITESPACE.lastIndex = pos;
    WHITESPACE.exec(text);
    pos = WHITESPACE.lastIndex;
  };
  const readString = (): string => {
    STRING.lastIndex = pos;
    const match = STRING.exec(text);
    if (!match) return fail("bad string");
    pos = STRING.lastIndex;
    const raw = match[0];
    return raw.includes("\\") ? (JSON.parse(raw) as string) : raw.slice(1, -1);
  };

  const value = (depth: number): RawJson => {
    if (depth > 64) fail("nested deeper than 64 levels");
    skipWhitespace();
    const c = text[pos];
    if (c === "{") {
      pos++;
      const out: { [key: string]: RawJson } = {};
      skipWhitespace();
      if (text[pos] === "}") {
        pos++;
        return out;
      }
      while (true) {
        skipWhitespace();
        const key = readString();
        skipWhitespace();
        if (text[pos++] !== ":") fail("expected ':'");
        Object.defineProperty(out, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        skipWhitespace();
        const next = text[pos++];
        if (next === "}") return out;
        if (next !== ",") fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      pos++;
      const out: RawJson[] = [];
      skipWhitespace();
      if (text[pos] === "]") {
        pos++;
        return out;
      }
      while (true) {
        out.push(value(depth + 1));
        skipWhitespace();
        const next = text[pos++];
        if (next === "]") return out;
        if (next !== ",") fail("expected ',' or ']'");
      }
    }
    if (c === '"') return readString();
    if (text.startsWith("true", pos)) return (pos += 4), true;
    if (text.startsWith("false", pos)) return (pos += 5), false;
    if (text.startsWith("null", pos)) return (pos += 4), null;
    NUMBER.lastIndex = pos;
    const match = NUMBER.exec(text);
    if (!match) return fail(`unexpected ${c === undefined ? "end of input" : JSON.stringify(c)}`);
    pos = NUMBER.lastIndex;
    return new RawNumber(match[0]);
  };

  const result = value(0);
  skipWhitespace();
  if (pos !== text.length) fail("trailing characters");
  return result;
}

/**
 * Serializes with object keys sorted (Chroma returns metadata keys in a different order
 * from call to call, so identical records must serialize identically to deduplicate),
 * and numbers as their source text.
 */
export function canonicalJson(value: RawJson): string {
  if (value === null) return "null";
  if (value instanceof RawNumber) return value.text;
  if (typeof value === "string" || typeof value === "boolean") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(",")}}`;
}

/**
 * Finds the source text of each top-level member of a JSON object without parsing the
 * values, so big members (embedding arrays) can go to the native JSON.parse and small
 * ones that need number text to parseRawJson. Skips over values with sticky regexes, so
 * the scan runs at native speed through digits and text.
 */
export function topLevelMembers(text: string): Map<string, string> {
  const members = new Map<string, string>();
  const PLAIN = /[^"[\]{}]*/y;
  const SCALAR = /[^,}\]\s]+/y;
  let pos = 0;
  const fail = (what: string): never => {
    throw new RawJsonError(`invalid JSON at offset ${pos}: ${what}`);
  };
  const skip = (re: RegExp) => {
    re.lastIndex = pos;
    if (re.exec(text)) pos = re.lastIndex;
  };
  const skipString = () => {
    STRING.lastIndex = pos;
    if (!STRING.exec(text)) fail("bad string");
    pos = STRING.lastIndex;
  };
  const skipValue = () => {
    const c = text[pos];
    if (c === '"') return skipString();
    if (c !== "[" && c !== "{") {
      const start = pos;
      skip(SCALAR);
      if (pos === start) fail("expected a value");
      return;
    }
    let depth = 0;
    do {
      const d = text[pos];
      if (d === undefined) fail("unexpected end of input");
      if (d === '"') {
        skipString();
      } else {
        if (d === "[" || d === "{") depth++;
        else depth--;
        pos++;
      }
      if (depth > 0) skip(PLAIN);
    } while (depth > 0);
  };

  skip(WHITESPACE);
  if (text[pos++] !== "{") fail("expected an object");
  skip(WHITESPACE);
  if (text[pos] === "}") return members;
  while (true) {
    skip(WHITESPACE);
    const keyStart = pos;
    skipString();
    const key = JSON.parse(text.slice(keyStart, pos)) as string;
    skip(WHITESPACE);
    if (text[pos++] !== ":") fail("expected ':'");
    skip(WHITESPACE);
    const start = pos;
    skipValue();
    members.set(key, text.slice(start, pos));
    skip(WHITESPACE);
    const next = text[pos++];
    if (next === "}") return members;
    if (next !== ",") fail("expected ',' or '}'");
  }
}

/**
 * The fast path for the metadatas column of a get response, starting at `start` (the
 * `[`): when every element is null or a flat object whose keys and string values have
 * no escapes, whose values are scalars and which has no whitespace (what Chroma sends),
 * returns exactly what canonicalJson(parseRawJson(column)) returns, element by element,
 * about ten times faster (it slices the source text instead of building values), and
 * where the column ends. Returns null for anything else, and the caller takes the
 * general parser.
 */
export function canonicalFlatObjects(text: string, start: number): { values: string[]; end: number } | null {
  const values: string[] = [];
  let pos = start;
  let backslash = text.indexOf("\\", pos);
  if (backslash < 0) backslash = text.length;
  // A string without escapes, from the quote at pos; its end (past the closing quote) or -1.
  const stringEnd = (): number => {
    if (text.charCodeAt(pos) !== 0x22) return -1;
    const close = text.indexOf('"', pos + 1);
    if (close < 0 || close > backslash) return -1;
    return close + 1;
  };
  if (text.charCodeAt(pos++) !== 0x5b /* [ */) return null;
  if (text.charCodeAt(pos) === 0x5d /* ] */) return { values, end: pos + 1 };
  const keys: string[] = [];
  const members: string[] = [];
  while (true) {
    if (text.startsWith("null", pos)) {
      values.push("null");
      pos += 4;
    } else {
      if (text.charCodeAt(pos++) !== 0x7b /* { */) return null;
      keys.length = 0;
      members.length = 0;
      let sorted = true;
      if (text.charCodeAt(pos) === 0x7d /* } */) {
        pos++;
      } else {
        while (true) {
          const keyStart = pos;
          const keyEnd = stringEnd();
          if (keyEnd < 0 || text.charCodeAt(keyEnd) !== 0x3a /* : */) return null;
          pos = keyEnd + 1;
          const c = text.charCodeAt(pos);
          if (c === 0x22) {
            pos = stringEnd();
            if (pos < 0) return null;
          } else if (c === 0x74 /* t */ && text.startsWith("true", pos)) pos += 4;
          else if (c === 0x66 /* f */ && text.startsWith("false", pos)) pos += 5;
          else if (c === 0x6e /* n */ && text.startsWith("null", pos)) pos += 4;
          else {
            NUMBER.lastIndex = pos;
            if (!NUMBER.test(text)) return null;
            pos = NUMBER.lastIndex;
          }
          const key = text.slice(keyStart + 1, keyEnd - 1);
          if (keys.length > 0 && key <= keys[keys.length - 1]!) sorted = false;
          keys.push(key);
          members.push(text.slice(keyStart, pos));
          const next = text.charCodeAt(pos++);
          if (next === 0x7d /* } */) break;
          if (next !== 0x2c /* , */) return null;
        }
      }
      if (sorted) values.push(`{${members.join(",")}}`);
      else {
        const order = keys.map((_, i) => i).sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : 0));
        for (let i = 1; i < order.length; i++) if (keys[order[i]!] === keys[order[i - 1]!]) return null; // duplicate key: the general parser decides
        values.push(`{${order.map((i) => members[i]).join(",")}}`);
      }
    }
    const next = text.charCodeAt(pos++);
    if (next === 0x5d /* ] */) return { values, end: pos };
    if (next !== 0x2c /* , */) return null;
  }
}
