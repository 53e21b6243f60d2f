import { chmod, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * DATA_DIR/service.json: how a CLI on the same DATA_DIR finds the running service. Holds
 * no secret (the token is in DATA_DIR/api-token or BACKUP_API_TOKEN); 0600 all the same.
 */
export interface ServiceFile {
  url: string;
  pid: number;
  /** ISO-8601. */
  started: string;
  version: string;
}

export const serviceFilePath = (dataDir: string) => join(dataDir, "service.json");

export async function writeServiceFile(dataDir: string, info: ServiceFile): Promise<void> {
  const path = serviceFilePath(dataDir);
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, JSON.stringify(info, null, 1) + "\n", { mode: 0o600 });
  await chmod(temp, 0o600);
  await rename(temp, path);
}

/** The file's contents, or null when absent or not a service file. */
export async function readServiceFile(dataDir: string): Promise<ServiceFile | null> {
  try {
    const parsed = JSON.parse(await readFile(serviceFilePath(dataDir), "utf8")) as Partial<ServiceFile>;
    if (typeof parsed.url !== "string" || !Number.isInteger(parsed.pid)) return null;
    return parsed as ServiceFile;
  } catch {
    return null;
  }
}

/** Removes the file if it still names `pid` (another service may have replaced it since). */
export async function removeServiceFile(dataDir: string, pid: number): Promise<void> {
  const current = await readServiceFile(dataDir);
  if (current && current.pid !== pid) return;
  await rm(serviceFilePath(dataDir), { force: true });
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // alive, another user's
  }
}
