export type LogLevel = "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;
export type Logger = (level: LogLevel, message: string, fields?: LogFields) => void;

/** One JSON object per line on stdout (info) or stderr (warn, error). */
export const jsonLogger: Logger = (level, message, fields = {}) => {
  const line = JSON.stringify({ time: new Date().toISOString(), level, message, ...fields });
  if (level === "info") console.log(line);
  else console.error(line);
};

export const silentLogger: Logger = () => {};

/** An error as log fields: its message, type, and cause chain, never a stack of secrets. */
export function errorFields(err: unknown): LogFields {
  if (!(err instanceof Error)) return { error: String(err) };
  const causes: string[] = [];
  for (let c = err.cause; c instanceof Error && causes.length < 5; c = c.cause) causes.push(`${c.name}: ${c.message}`);
  return { error: err.message, errorType: err.name, ...(causes.length ? { causes } : {}) };
}
