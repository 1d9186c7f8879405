#!/usr/bin/env node
// The web page against a gateway that requires API keys, in Debian's Chromium:
//
//   node tests/browser/api_key.mjs <base-url> <photo> <key>
//
// Uploads <photo> without a key: the page must say it was not accepted and open its key field.
// Then types <key> into the field and uploads again: the fast label must show, then the
// refined one, which the page reads over fetch (EventSource cannot send the key). Exits 0 when
// every check passed, 1 when one failed, 2 when Chromium or playwright-core is missing.
// Run by tests/it/auth.rs.

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CHROMIUM = process.env.TANDEM_CHROMIUM || "/usr/bin/chromium";
const [base, photo, key] = process.argv.slice(2);
if (!base || !photo || !key) {
  console.error("usage: node tests/browser/api_key.mjs <base-url> <photo> <key>");
  process.exit(2);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (error) {
  console.error(`FAIL: playwright-core is missing (${error.message}): run tests/browser/install.sh`);
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`FAIL: no Chromium at ${CHROMIUM}: run tests/browser/install.sh`);
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), "tandem-chromium-"));
const problems = [];
let context;
let failed = false;
/** Waits until the result card's data-<which> is one of `states` (a function: the page's CSP
 * forbids evaluating strings). */
const waitFor = (page, which, states, timeout) =>
  page.waitForFunction(
    ([which, states]) => states.includes(document.getElementById("result").dataset[which]),
    [which, states],
    { timeout, polling: 50 },
  );

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    timeout: 60_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  const jobRequests = [];
  page.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/job/")) jobRequests.push({ path, key: request.headers().authorization });
  });
  await page.goto(`${base}/`, { waitUntil: "load" });

  // Without a key: refused, and the page asks for one.
  await page.locator("#file").setInputFiles(photo);
  await waitFor(page, "fast", ["failed"], 30_000);
  const status = await page.locator("#status").textContent();
  if (!/API key/.test(status)) throw new Error(`status line without a key: "${status}"`);
  if (!(await page.locator("#key-box").evaluate((d) => d.open))) {
    throw new Error("the key field did not open after a 401");
  }
  console.log(`without a key: ${status}`);

  // With the key: the fast label, then the refined one.
  await page.locator("#api-key").fill(key);
  await page.locator("#file").setInputFiles(photo);
  await waitFor(page, "fast", ["done"], 30_000);
  console.log(`fast: ${await page.locator("#fast-label").textContent()}`);
  await waitFor(page, "slow", ["succeeded", "failed"], 90_000);
  const slow = await page.locator("#slow-label").textContent();
  if ((await page.locator("#result").getAttribute("data-slow")) !== "succeeded") {
    throw new Error(`no refined label: "${await page.locator("#status").textContent()}"`);
  }
  console.log(`refined: ${slow}`);
  // Over the event stream, with the key; no fallback to polling.
  const streams = jobRequests.filter((r) => r.path.endsWith("/events"));
  if (!streams.length || streams.some((r) => r.key !== `Bearer ${key}`)) {
    throw new Error(`event stream requests: ${JSON.stringify(jobRequests)}`);
  }
  if (jobRequests.length !== streams.length) {
    throw new Error(`the page polled instead of streaming: ${JSON.stringify(jobRequests)}`);
  }
  if (problems.length) throw new Error(problems.join("; "));
  console.log("PASS");
} catch (error) {
  failed = true;
  console.error(`FAIL: ${error.message}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
