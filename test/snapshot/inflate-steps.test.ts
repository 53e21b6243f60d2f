import fc from "fast-check";
import { deflateSync, Inflate, inflateSync } from "fflate";
import { deflateRawSync } from "node:zlib";
import { expect, it } from "vitest";
import { inflateInSteps } from "../../lib/snapshot/inflate-steps.js";

// inflateInSteps's two paths: input of at most one step inflates in one shot (inflateSync
// into a buffer of size + 1), a longer one through the streaming Inflate. The streaming
// path is the oracle: the same input and claim must get the same answer from both.

const inflaters = { Inflate, inflateSync };

/** The answer as comparable data: the bytes (base64), the refusal's sentence, or the thrown error's class and words. */
function answer(stored: Uint8Array, size: number, step: number): { text: string; steps: [number, number][] } {
  const steps: [number, number][] = [];
  try {
    const out = inflateInSteps(inflaters, stored, size, step, (input, output) => steps.push([input, output]));
    return { text: typeof out === "string" ? out : Buffer.from(out).toString("base64"), steps };
  } catch (err) {
    return { text: `${(err as Error).constructor.name}: ${(err as Error).message}`, steps };
  }
}

const content = fc.oneof(
  fc.array(fc.constantFrom("chroma ", "vector ", "é😀", "\n", "日本語"), { maxLength: 3000 }).map((w) => new TextEncoder().encode(w.join(""))),
  fc.uint8Array({ maxLength: 20_000 }), // random: deflate stores it (stored blocks)
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.integer({ min: 1, max: 300 })).map(([b, times]) => new Uint8Array(b.byteLength * times).map((_, i) => b[i % b.byteLength]!)),
);

it("one shot answers what the streaming path answers: the same bytes, or a refusal (in the same words for a whole stream)", () => {
  fc.assert(
    fc.property(content, fc.constantFrom(0, 1, 6, 9), fc.integer({ min: -40, max: 40 }), fc.constantFrom(1, 0.5, 0.9), (bytes, level, off, cut) => {
      const full = deflateSync(bytes, { level: level as 0 | 1 | 6 | 9 });
      const stored = full.subarray(0, Math.max(2, Math.floor(full.byteLength * cut)));
      const size = Math.max(0, bytes.byteLength + off);
      const oneShot = answer(stored, size, stored.byteLength); // input of one step: one shot
      const streamed = answer(stored, size, Math.ceil(stored.byteLength / 2)); // two steps: the streaming Inflate
      expect(oneShot.steps.length).toBeLessThanOrEqual(1); // none when fflate throws (bad or cut data)
      const accepted = (a: { text: string }) => !/^(inflates to|\w*Error: )/.test(a.text);
      expect(accepted(oneShot)).toBe(accepted(streamed));
      if (accepted(oneShot) || stored.byteLength === full.byteLength) expect(oneShot.text).toBe(streamed.text);
      if (off === 0 && stored.byteLength === full.byteLength) expect(oneShot.text).toBe(Buffer.from(bytes).toString("base64"));
    }),
    { numRuns: 400 },
  );
});

it("a bomb that fits in one step is refused in that one step, its output never held: a buffer of the claim + 1 is all it gets", () => {
  for (const bomb of [deflateRawSync(new Uint8Array(12 * 1024 * 1024), { level: 9 }), deflateSync(new Uint8Array(12 * 1024 * 1024), { level: 9 })]) {
    expect(bomb.byteLength).toBeLessThanOrEqual(16 * 1024);
    for (const claim of [0, 1000, 1_000_000]) {
      const { text, steps } = answer(bomb, claim, 16 * 1024);
      expect(text).toBe(`inflates to more than the ${claim} bytes claimed`);
      expect(steps).toEqual([[bomb.byteLength, claim + 1]]);
    }
    expect(answer(bomb, 12 * 1024 * 1024, 16 * 1024).text).toBe(Buffer.from(new Uint8Array(12 * 1024 * 1024)).toString("base64"));
  }
});

it("a stored (uncompressed) block longer than the claim is refused, not thrown as a resource limit", () => {
  const bytes = new Uint8Array(5000).map((_, i) => (i * 7919) % 251);
  const stored = deflateSync(bytes, { level: 0 });
  expect(answer(stored, 4999, stored.byteLength).text).toBe("inflates to more than the 4999 bytes claimed");
  expect(answer(stored, 5001, stored.byteLength).text).toBe("inflates to fewer than the 5001 bytes claimed");
});
