// A small app next to chroma-backup: `chroma-backup run -- node examples/node-app/app.js`.
// It adds a few documents (once) and reads them back. Exit code: 0 when every document it
// ever added is there (fresh, or brought back by the startup restore), 1 when some are missing.
import { URL } from "node:url";
import { ChromaClient } from "chromadb";

// `new ChromaClient()` connects to 127.0.0.1:8000, where `chroma-backup run` serves Chroma
// by default. `run` also sets CHROMA_URL; honouring it lets the app follow CHROMA_PORT.
function client() {
  if (!process.env.CHROMA_URL) return new ChromaClient();
  const url = new URL(process.env.CHROMA_URL);
  return new ChromaClient({ host: url.hostname, port: Number(url.port || (url.protocol === "https:" ? 443 : 80)), ssl: url.protocol === "https:" });
}

const chroma = client();
const count = Number(process.env.EXAMPLE_DOCUMENTS || 3);
// Embeddings are given, so no embedding model is needed (a real app would use one).
const notes = await chroma.getOrCreateCollection({ name: "notes", embeddingFunction: null, metadata: { example: "node-app" } });
const ids = Array.from({ length: count }, (_, i) => `note-${i}`);
const found = await notes.get({ ids });
const missing = ids.filter((id) => !found.ids.includes(id));
if (process.env.EXAMPLE_EXPECT_DATA === "1" && missing.length > 0) {
  console.log(`node-app: ${missing.length} of ${count} documents are missing: ${missing.join(", ")}`);
  process.exit(1);
}
if (missing.length > 0) {
  await notes.add({
    ids: missing,
    documents: missing.map((id) => `the text of ${id}`),
    embeddings: missing.map((_, i) => [i, 1, 0.5]),
    metadatas: missing.map((id) => ({ id, addedAt: new Date().toISOString() })),
  });
}
const back = await notes.get({ ids });
const ok = back.ids.length === count;
console.log(`node-app: ${back.ids.length} of ${count} documents in "notes" (added ${missing.length} now)`);
process.exit(ok ? 0 : 1);
