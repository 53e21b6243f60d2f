import { fileURLToPath } from "node:url";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "node",
          include: ["test/**/*.test.ts"],
          exclude: ["test/workers/**", "node_modules/**"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          pool: "forks",
        },
      },
      {
        plugins: [
          cloudflareTest({
            // wrangler.toml's main (handlers/worker.ts) is the real Worker; tests use a stub.
            main: fileURLToPath(new URL("./test/workers/entry.ts", import.meta.url)),
            remoteBindings: false,
            wrangler: { configPath: fileURLToPath(new URL("./wrangler.toml", import.meta.url)) },
          }),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
