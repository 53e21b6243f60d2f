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
            // The real Worker (wrangler.toml's main), loaded into the test isolate: the tests
            // import it and call its fetch/scheduled with an env of their own.
            main: fileURLToPath(new URL("./runtime/worker.ts", import.meta.url)),
            remoteBindings: false,
            wrangler: { configPath: fileURLToPath(new URL("./wrangler.toml", import.meta.url)) },
          }),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts"],
          // Starts a real Chroma in Node; the tests get its URL with inject("chromaUrl").
          globalSetup: ["test/workers/global-setup.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
