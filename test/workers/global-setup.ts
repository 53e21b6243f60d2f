/**
 * globalSetup of the "workers" vitest project. Runs in Node, not in workerd: starts a real
 * Chroma (the embedded `chroma run`) on a free loopback port with a temp data dir, fills
 * it, and hands its URL to the tests with `provide("chromaUrl", ...)`. The tests read it
 * with `inject("chromaUrl")` and reach Chroma from inside workerd over plain fetch.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { startEmbeddedChroma } from "../../lib/chroma/embedded.js";
import { addRecords, createCollection, makeRecords } from "../fixtures/dataset.js";
import { generateCollections, loadCorpus, seedCollection } from "../../bench/dataset.js";
import { CHURN, DOCS, REAL } from "./dataset.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** Base URL of the Chroma started for the workers project, e.g. http://127.0.0.1:40123. */
    chromaUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dataDir = await mkdtemp(join(tmpdir(), "chroma-workers-"));
  const chroma = await startEmbeddedChroma({ dataDir });
  try {
    const docs = await createCollection(chroma.url, DOCS.name, '{"hnsw":{"space":"l2"}}', '{"purpose":"workers test"}');
    await addRecords(chroma.url, docs, makeRecords(DOCS.count, DOCS.dim, DOCS.seed, DOCS.name));
    const churn = await createCollection(chroma.url, CHURN.name, '{"hnsw":{"space":"l2"}}');
    await addRecords(chroma.url, churn, makeRecords(CHURN.count, CHURN.dim, CHURN.seed, CHURN.name));
    const spec = { name: REAL.name, space: "cosine" as const, share: 1, configurationJson: '{"hnsw":{"space":"cosine"}}', metadataJson: '{"corpus":"changelogs"}' };
    const corpus = loadCorpus(REAL.count);
    const [real] = generateCollections({ specs: [spec], counts: [REAL.count], dim: REAL.dim, seed: REAL.seed, corpus });
    await seedCollection(chroma.url, real!);
    console.log(`[workers] ${REAL.name}: ${REAL.count} records of ${corpus.origin}, ${(real!.documents.reduce((a, d) => a + d.length, 0) / 1e6).toFixed(1)} M characters`);
  } catch (err) {
    await chroma.stop();
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  project.provide("chromaUrl", chroma.url);
  return async () => {
    await chroma.stop();
    await rm(dataDir, { recursive: true, force: true });
  };
}
