/**
 * A set of 16-byte digests in typed arrays, for per-record state that must stay small at
 * millions of records: the keys packed one after another (16 bytes each, numbered by
 * insertion), and an open-addressing table (linear probing) of key numbers + 1, at most
 * 70% full: 22 to 28 bytes per key when sized ahead, up to 36 when grown, against ~100
 * for a Map of 16-character strings.
 *
 * The keys are SHA-256 prefixes, so their first four bytes serve as the hash. Lookups
 * compare all 16 bytes: two keys are the same only when all 128 bits are equal, the trust
 * the format already puts in a record digest (a collision is as likely as in the
 * content addressing the chunks rest on). Nothing is ever removed.
 */
export class DigestIndex {
  private keys: Uint8Array;
  private table: Uint32Array;
  private mask: number;
  size = 0;

  constructor(expected = 0) {
    this.keys = new Uint8Array(Math.max(16, expected) * 16);
    this.table = new Uint32Array(tableSize(expected));
    this.mask = this.table.length - 1;
  }

  /** The number of key `i` of `digests` (16 bytes at `i * 16`), or -1 when absent. */
  find(digests: Uint8Array, i: number): number {
    const o = i * 16;
    for (let slot = firstSlot(digests, o) & this.mask; ; slot = (slot + 1) & this.mask) {
      const entry = this.table[slot]!;
      if (entry === 0) return -1;
      if (this.equals(entry - 1, digests, o)) return entry - 1;
    }
  }

  /** Adds key `i` of `digests`; answers its number and whether it was new. */
  add(digests: Uint8Array, i: number): { number: number; added: boolean } {
    const o = i * 16;
    let slot = firstSlot(digests, o) & this.mask;
    for (; ; slot = (slot + 1) & this.mask) {
      const entry = this.table[slot]!;
      if (entry === 0) break;
      if (this.equals(entry - 1, digests, o)) return { number: entry - 1, added: false };
    }
    const number = this.size++;
    if (this.keys.length < this.size * 16) {
      const grown = new Uint8Array(Math.ceil((this.keys.length * 1.5) / 16) * 16);
      grown.set(this.keys);
      this.keys = grown;
    }
    this.keys.set(digests.subarray(o, o + 16), number * 16);
    if (this.size > this.table.length * MAX_LOAD) this.rehash(this.table.length * 2);
    else this.table[slot] = number + 1;
    return { number, added: true };
  }

  /** Bytes held, for tests and measurements. */
  get byteLength(): number {
    return this.keys.byteLength + this.table.byteLength;
  }

  private equals(number: number, digests: Uint8Array, o: number): boolean {
    const k = number * 16;
    for (let b = 0; b < 16; b++) if (this.keys[k + b] !== digests[o + b]) return false;
    return true;
  }

  private rehash(size: number): void {
    this.table = new Uint32Array(size);
    this.mask = size - 1;
    for (let n = 0; n < this.size; n++) {
      let slot = firstSlot(this.keys, n * 16) & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = n + 1;
    }
  }
}

/** Linear probing stays short below this (misses probe ~6 slots at 0.7, ~50 at 0.9). */
const MAX_LOAD = 0.7;

/** A power of two that holds `keys` at most MAX_LOAD full. */
function tableSize(keys: number): number {
  let size = 16;
  while (size * MAX_LOAD < keys) size *= 2;
  return size;
}

function firstSlot(bytes: Uint8Array, o: number): number {
  return (bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24)) >>> 0;
}
