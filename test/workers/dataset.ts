/** What global-setup.ts writes to the Chroma of the workers project (no Node imports: the tests load this in workerd). */

/** Backed up through the Worker and restored under another name (worker.test.ts). */
export const DOCS = { name: "wk-docs", count: 400, dim: 16, seed: 7 };
/** Changed between backups so that pruning leaves chunks nobody references (worker-scheduled.test.ts). */
export const CHURN = { name: "wk-churn", count: 60, dim: 8, seed: 11 };
