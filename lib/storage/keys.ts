import { StorageError, type StorageOperation } from "./errors.js";

/**
 * Why a key is unsafe, or null when it is fine. Keys are relative `/`-separated paths:
 * no empty, `.` or `..` segment, no leading `/`, no backslash, no NUL or other control
 * character. Checked by every driver, so a key that works on one works on all.
 */
export function keyProblem(key: string): string | null {
  if (key.length === 0) return "is empty";
  if (key.length > 1024) return "is longer than 1024 characters";
  if (key.startsWith("/")) return "is absolute (starts with /)";
  if (key.includes("\\")) return "contains a backslash";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) return "contains a NUL or control character";
  for (const segment of key.split("/")) {
    if (segment === "") return "has an empty path segment (// or a trailing /)";
    if (segment === "." || segment === "..") return `has a "${segment}" segment`;
  }
  return null;
}

export function assertValidKey(driver: string, operation: StorageOperation, key: string): void {
  const problem = keyProblem(key);
  if (problem) {
    throw new StorageError(`${driver}: invalid key ${JSON.stringify(key)}: it ${problem}`, {
      driver,
      operation,
      key,
      kind: "invalid_key",
      status: 400,
    });
  }
}

/** A list prefix may be empty or end in `/`, but must not escape the root either. */
export function assertValidPrefix(driver: string, prefix: string): void {
  if (prefix === "") return;
  const problem = keyProblem(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
  if (problem) {
    throw new StorageError(`${driver}: invalid list prefix ${JSON.stringify(prefix)}: it ${problem}`, {
      driver,
      operation: "list",
      key: prefix,
      kind: "invalid_key",
      status: 400,
    });
  }
}
