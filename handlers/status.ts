import type { AppContext } from "./context.js";

export const status = async (c: AppContext) => {
  const { service } = c.get("deps");
  const body = await service.status();
  return c.json(body.lastBackup ? { ...body, lastBackup: { ...body.lastBackup, warnings: await lastBackupWarnings(c, body.lastBackup.id) } } : body);
};

/** The newest snapshot's warnings (a drop, writes during the backup); null when its manifest cannot be read now. */
async function lastBackupWarnings(c: AppContext, id: string): Promise<string[] | null> {
  try {
    return (await c.get("deps").service.get(id)).warnings;
  } catch {
    return null;
  }
}
