/**
 * Test-only Worker entry for the "workers" vitest project. The pool imports a `main`
 * module into the test isolate; the real one (handlers/worker.ts) does not exist yet,
 * so the tests run beside this stub. Bindings come from wrangler.toml.
 */
export default {
  async fetch(): Promise<Response> {
    return new Response("chroma-backup test worker", { status: 404 });
  },
};
