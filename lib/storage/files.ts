import { open, type FileHandle } from "node:fs/promises";

/**
 * Writes all of `bytes` at the file's position, again for what a short write left out: a
 * write into a full tmpfs can report fewer bytes written without an error (DESIGN.md). A
 * write that makes no progress fails as ENOSPC. `progress.written` counts what landed.
 */
export async function writeFully(handle: FileHandle, bytes: Uint8Array, progress?: { written: number }): Promise<void> {
  let offset = 0;
  while (offset < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.byteLength - offset);
    if (bytesWritten <= 0) throw Object.assign(new Error(`a write of ${bytes.byteLength - offset} bytes wrote none`), { code: "ENOSPC" });
    offset += bytesWritten;
    if (progress) progress.written += bytesWritten;
  }
}

/** fsyncs a directory, so that the entries created or renamed in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
