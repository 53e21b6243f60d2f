"""A small app next to chroma-backup: `chroma-backup run -- python main.py`.

`chromadb.HttpClient()` with no arguments connects to localhost:8000, where
`chroma-backup run` serves Chroma by default (CHROMA_HOST, CHROMA_PORT move it; `run`
puts both in this process's environment). It adds a few documents once and reads them
back; the exit code says whether every document it ever added is there.
"""
import os
import sys

import chromadb


def client():
    host = os.environ.get("CHROMA_HOST")
    port = os.environ.get("CHROMA_PORT")
    if host and port and (host, port) != ("127.0.0.1", "8000"):
        return chromadb.HttpClient(host=host, port=int(port))
    return chromadb.HttpClient()


def main() -> int:
    chroma = client()
    count = int(os.environ.get("EXAMPLE_DOCUMENTS", "3"))
    # Embeddings are given, so no embedding model is needed (a real app would use one).
    notes = chroma.get_or_create_collection("notes", embedding_function=None, metadata={"example": "python-app"})
    ids = [f"note-{i}" for i in range(count)]
    found = set(notes.get(ids=ids)["ids"])
    missing = [i for i in ids if i not in found]
    if os.environ.get("EXAMPLE_EXPECT_DATA") == "1" and missing:
        print(f"python-app: {len(missing)} of {count} documents are missing: {', '.join(missing)}")
        return 1
    if missing:
        notes.add(
            ids=missing,
            documents=[f"the text of {i}" for i in missing],
            embeddings=[[float(n), 1.0, 0.5] for n, _ in enumerate(missing)],
            metadatas=[{"id": i} for i in missing],
        )
    back = notes.get(ids=ids)["ids"]
    print(f'python-app: {len(back)} of {count} documents in "notes" (added {len(missing)} now)')
    return 0 if len(back) == count else 1


if __name__ == "__main__":
    sys.exit(main())
