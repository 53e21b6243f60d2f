import { InvalidRequestError } from "./errors.js";

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Seconds from a number of seconds or a string like `"90s"`, `"15m"`, `"1h"`, `"7d"`. */
export function parseDuration(value: number | string, field = "duration"): number {
  if (typeof value === "number") {
    if (Number.isFinite(value) && value >= 0) return value;
  } else {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$/.exec(value);
    if (match) return Number(match[1]) * UNITS[match[2] || "s"]!;
  }
  throw new InvalidRequestError(`${field}: ${JSON.stringify(value)} is not a duration; use seconds (e.g. 3600) or "90s", "15m", "1h", "7d"`, { field });
}
