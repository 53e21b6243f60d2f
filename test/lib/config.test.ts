/** The environment variables of automatic backups and of the drop rule (API.md's table). */
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config.js";
import { InvalidRequestError } from "../../lib/errors.js";

describe("BACKUP_INTERVAL, BACKUP_ON_STOP_TIMEOUT, RETENTION_KEEP_BEFORE_DROP", () => {
  it("default to 1h, 30s and 30d", () => {
    const config = loadConfig({});
    expect(config.backupIntervalSeconds).toBe(3600);
    expect(config.backupOnStopTimeoutSeconds).toBe(30);
    expect(config.retention.keepBeforeDrop).toBe(30 * 86400);
  });

  it("take durations; off (or 0) turns each off", () => {
    const config = loadConfig({ BACKUP_INTERVAL: "15m", BACKUP_ON_STOP_TIMEOUT: "2m", RETENTION_KEEP_BEFORE_DROP: "7d" });
    expect([config.backupIntervalSeconds, config.backupOnStopTimeoutSeconds, config.retention.keepBeforeDrop]).toEqual([900, 120, 7 * 86400]);
    for (const off of ["off", "OFF", "0", "0s"]) {
      const c = loadConfig({ BACKUP_INTERVAL: off, BACKUP_ON_STOP_TIMEOUT: off, RETENTION_KEEP_BEFORE_DROP: off });
      expect([c.backupIntervalSeconds, c.backupOnStopTimeoutSeconds, c.retention.keepBeforeDrop]).toEqual([null, 0, 0]);
    }
  });

  it("refuse anything else, naming the variable", () => {
    for (const name of ["BACKUP_INTERVAL", "BACKUP_ON_STOP_TIMEOUT", "RETENTION_KEEP_BEFORE_DROP"]) {
      expect(() => loadConfig({ [name]: "soon" })).toThrow(InvalidRequestError);
      expect(() => loadConfig({ [name]: "soon" })).toThrow(new RegExp(name));
    }
  });
});
