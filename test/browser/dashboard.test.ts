/**
 * The dashboard in a real browser: Debian's chromium driven by playwright-core, against
 * the app served over HTTP by @hono/node-server, a real Chroma and the fs store. Logs in
 * with the token, sees the snapshot rows, backs up now (NDJSON progress) and sees the new
 * row, previews a prune ("these would go") and applies it, runs a restore drill; saves
 * docs/dashboard.png for the README.
 */
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { serve, type ServerType } from "@hono/node-server";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackupService } from "../../lib/service.js";
import { startTestChroma, type TestChroma } from "../fixtures/chroma.js";
import { addRecords, collectionId, makeRecords } from "../fixtures/dataset.js";
import { makeApp, makeService, makeStore, resetChroma, TOKEN, type Store } from "../handlers/harness.js";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let chroma: TestChroma;
let store: Store;
let service: BackupService;
let server: ServerType;
let base: string;
let browser: BrowserContext;
let profile: string;
let page: Page;

const available = existsSync(CHROMIUM);
if (!available) console.warn(`skipping the dashboard browser test: ${CHROMIUM} is missing (apt-get install -y chromium; .ci/run does)`);

describe.skipIf(!available)("the dashboard in headless Chromium", () => {
  beforeAll(async () => {
    chroma = await startTestChroma();
    await resetChroma(chroma.url, [{ name: "docs", count: 150, dim: 8, seed: 41 }, { name: "notes", count: 60, dim: 4, seed: 42 }]);
    store = await makeStore("fs");
    service = makeService({ chromaUrl: chroma.url, storage: store.storage, keepLast: 24 });
    await service.backup({ tag: "nightly" });
    await addRecords(chroma.url, await collectionId(chroma.url, "docs"), makeRecords(40, 8, 43, "more"));
    await service.backup({});
    const app = makeApp(service);
    server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
    });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    profile = await mkdtemp("/tmp/dashboard-chromium-");
    // A fresh --user-data-dir (playwright passes it for a persistent context).
    browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1200, height: 900 } });
    page = await browser.newPage();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((resolve) => server?.close(resolve));
    await store?.cleanup();
    await chroma?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  const rows = () => page.locator("#snapshots tr");

  it("asks for the token, then shows the snapshot rows, the facts and the chart", async () => {
    await page.goto(base + "/");
    await expect.poll(() => page.locator("#login").isVisible()).toBe(true);
    expect(await page.locator("#app").isVisible()).toBe(false);
    await page.fill("#token", TOKEN);
    await page.click("#login-form button[type=submit]");
    await expect.poll(() => rows().count(), { timeout: 15_000 }).toBe(2);
    expect(await rows().nth(1).locator("td").nth(5).textContent()).toBe("nightly");
    expect(await rows().nth(0).locator("td").nth(2).textContent()).toBe("250");
    expect(await page.locator("#facts").textContent()).toMatch(/RTO.*about .* to restore/);
    expect(await page.locator("#rto-basis").textContent()).toMatch(/no restore measured yet/);
    expect(await page.locator("#chart polyline").count()).toBe(3);
    // Kept for the tab: a reload needs no new login.
    expect(await page.evaluate(() => sessionStorage.getItem("chroma-backup-token"))).toBe(TOKEN);
    await page.reload();
    await expect.poll(() => rows().count(), { timeout: 15_000 }).toBe(2);
  });

  it("backs up now and shows the new row", async () => {
    await addRecords(chroma.url, await collectionId(chroma.url, "notes"), makeRecords(25, 4, 44, "late"));
    await page.click("#backup-now");
    await expect.poll(() => rows().count(), { timeout: 30_000 }).toBe(3);
    expect(await page.locator("#message").textContent()).toMatch(/^snapshot \d{8}T\d{6}Z-[0-9a-f]{4} taken: 275 records/);
    expect(await rows().nth(0).locator("td").nth(2).textContent()).toBe("275");
  });

  it("runs a restore drill from a row and shows that it passed", async () => {
    await rows().nth(0).locator("button[data-action=drill]").click();
    await expect.poll(() => rows().nth(0).locator("td.drill").textContent(), { timeout: 60_000 }).toBe("passed");
    expect(await page.locator("#message").textContent()).toMatch(/drill .*: passed/);
  });

  it("previews a prune as 'these would go', then applies it", async () => {
    // An operator lowered RETENTION_KEEP_LAST: the oldest snapshot is now due.
    service.retention.keepLast = 2;
    const oldest = await rows().nth(2).getAttribute("data-id");
    await page.click("#prune-preview");
    await expect.poll(() => page.locator("#prune-plan").textContent(), { timeout: 15_000 }).toMatch(/^These would go \(1\)/);
    expect(await page.locator("#prune-list li").allTextContents()).toEqual([oldest]);
    expect(await rows().count()).toBe(3);
    await rows().nth(1).locator("button[data-action=verify]").click();
    await expect.poll(() => rows().nth(1).locator("td.verify").textContent(), { timeout: 15_000 }).toBe("ok");
    await page.screenshot({ path: join(import.meta.dirname, "../../docs/dashboard.png"), fullPage: true });
    await page.click("#prune-apply");
    await expect.poll(() => rows().count(), { timeout: 15_000 }).toBe(2);
    expect(await page.locator("#message").textContent()).toMatch(/^pruned 1 snapshot/);
  });
});
