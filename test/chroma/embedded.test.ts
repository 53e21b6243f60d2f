import { afterAll, beforeAll, expect, it } from "vitest";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";

let chroma: TestChroma;
beforeAll(async () => {
  chroma = await startTestChroma();
});
afterAll(async () => {
  await chroma?.close();
});

it("starts a real Chroma that stores and returns records", async () => {
  const collection = await chroma.client.createCollection({ name: "fixture-check", embeddingFunction: null });
  await collection.add({
    ids: ["a", "b"],
    embeddings: [
      [1, 2, 3],
      [4, 5, 6],
    ],
    documents: ["alpha", "beta"],
    metadatas: [{ n: 1 }, { n: 2 }],
  });
  const got = await collection.get({ ids: ["b"], include: ["embeddings", "documents", "metadatas"] });
  expect(got.ids).toEqual(["b"]);
  expect(got.documents).toEqual(["beta"]);
  expect(got.metadatas).toEqual([{ n: 2 }]);
  expect(got.embeddings).toEqual([[4, 5, 6]]);
  expect(await collection.count()).toBe(2);
});
