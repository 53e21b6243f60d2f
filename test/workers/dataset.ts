/** What global-setup.ts writes to the Chroma of the workers project (no Node imports: the tests load this in workerd). */

/** Backed up through the Worker and restored under another name (worker.test.ts). */
export const DOCS = { name: "wk-docs", count: 400, dim: 16, seed: 7 };
/** Changed between backups so that pruning leaves chunks nobody references (worker-scheduled.test.ts). */
export const CHURN = { name: "wk-churn", count: 60, dim: 8, seed: 11 };
/**
 * Real text (the machine's changelogs, as the benchmark loads them: bench/dataset.ts),
 * unit-norm clustered embeddings and mixed metadata, in a cosine collection: backed up
 * and restored through the Worker with the tricky DOCS (worker-real-data.test.ts).
 */
export const REAL = { name: "wk-real-text", count: 20_000, dim: 16, seed: 5 };
