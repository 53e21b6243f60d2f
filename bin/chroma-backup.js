#!/usr/bin/env node
// The `chroma-backup` command: registers tsx so Node runs the TypeScript sources, then
// hands over to lib/cli/main.ts (usage: `chroma-backup --help`).
import { existsSync } from "node:fs";
import { fileURLToPath, URL } from "node:url";
import { register } from "tsx/esm/api";

const tsconfig = fileURLToPath(new URL("../tsconfig.json", import.meta.url));
register({ tsconfig: existsSync(tsconfig) ? tsconfig : false });
const { run } = await import("../lib/cli/main.ts");
await run();
