#!/usr/bin/env node
// Drives Debian's Chromium through the gateway's web page, as a person would:
//
//   node tests/browser/upload_cat.mjs <base-url> <photo> [<screenshot.png>]
//
// Opens <base-url>/, uploads <photo> (the cat) with the file input, waits for the fast label
// "Egyptian cat", then for the refined (slow) label "Egyptian cat" over EventSource, checks
// that the result card did not move or resize when the refined label arrived, that the
// timings and the history show and that the card says the slow model decided, takes a
// screenshot; then picks the "Coffee" sample with the keyboard alone and takes a second
// screenshot (dark colour scheme) beside the first; then chooses "never" as the "Slow model"
// policy (`escalate=never`), uploads the cat again, and checks that the fast label is shown as
// final, decided by the fast model, with no refined label waited for.
// Exits 0 when every check passed, 1 when one failed, 2 when Chromium or playwright-core is
// missing (run tests/browser/install.sh). Run by tests/it/web_page.rs.

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CHROMIUM = process.env.TANDEM_CHROMIUM || "/usr/bin/chromium";
const FAST_LABEL = "Egyptian cat";
const SLOW_LABEL = "Egyptian cat";
const FAST_TIMEOUT_MS = 30_000;
const SLOW_TIMEOUT_MS = 90_000;
const OVERALL_TIMEOUT_MS = 170_000;

const [base, photo, screenshotArg] = process.argv.slice(2);
if (!base || !photo) {
  console.error("usage: node tests/browser/upload_cat.mjs <base-url> <photo> [<screenshot.png>]");
  process.exit(2);
}
const screenshot = screenshotArg || join(tmpdir(), "tandem-web-page.png");
const secondScreenshot = screenshot.replace(/(\.png)?$/i, "-sample-dark.png");

if (!existsSync(CHROMIUM)) {
  console.error(
    `FAIL: Chromium is not installed (no ${CHROMIUM}). Run tests/browser/install.sh ` +
      "(apt-get install chromium; npm ci in tests/browser), or set TANDEM_CHROMIUM.",
  );
  process.exit(2);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (error) {
  console.error(
    `FAIL: playwright-core is not installed in tests/browser/node_modules (${error.message}). ` +
      "Run tests/browser/install.sh.",
  );
  process.exit(2);
}
if (!existsSync(photo)) {
  console.error(`FAIL: no photo at ${photo}`);
  process.exit(2);
}

const origin = new URL(base).origin;
const problems = [];
const external = [];
const step = (text) => console.log(`- ${text}`);

const userDataDir = mkdtempSync(join(tmpdir(), "tandem-chromium-"));
let context;
let page;
const guard = setTimeout(async () => {
  console.error(`FAIL: the browser test did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`);
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

function check(ok, message) {
  if (!ok) throw new Error(message);
}

/** The result card's and the refined row's boxes, to show that nothing moves. */
async function geometry(page) {
  return page.evaluate(() => {
    const box = (id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    };
    return { result: box("result"), slow: box("slow"), fast: box("fast"), status: box("status") };
  });
}

function sameGeometry(a, b) {
  return Object.keys(a).every((key) =>
    ["x", "y", "width", "height"].every((side) => Math.abs(a[key][side] - b[key][side]) < 0.5),
  );
}

/**
 * Waits until the result card's data-<which> is one of `states` (for a job other than job id
 * `notJob`, when given); returns the page's texts.
 */
async function waitFor(page, which, states, timeout, job, notJob = "") {
  try {
    await page.waitForFunction(
      ([which, states, job, notJob]) => {
        const result = document.getElementById("result");
        return (
          states.includes(result.dataset[which]) &&
          (!notJob || (result.dataset.job && result.dataset.job !== notJob)) &&
          document.getElementById("preview-name").textContent.startsWith(job)
        );
      },
      [which, states, job, notJob],
      { timeout, polling: 50 },
    );
  } catch {
    const status = await page.locator("#status").textContent();
    // What the gateway says about the job, to tell a slow worker from a lost event.
    const record = await page.evaluate(async () => {
      const id = document.getElementById("result").dataset.job;
      if (!id) return "no job id";
      const response = await fetch(`/job/${id}`);
      return `GET /job/${id}: ${response.status} ${await response.text()}`;
    });
    throw new Error(
      `no ${which} answer for ${job} within ${timeout / 1000} s (status line: "${status}"; ${record})`,
    );
  }
  return texts(page);
}

async function texts(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent.trim();
    return {
      fast: text("fast-label"),
      fastScore: text("fast-score"),
      fastTime: text("fast-time"),
      fastModel: text("fast-model"),
      slow: text("slow-label"),
      slowScore: text("slow-score"),
      slowTime: text("slow-time"),
      slowModel: text("slow-model"),
      verdict: text("slow-verdict"),
      status: text("status"),
      decidedBy: text("decided-by"),
      job: document.getElementById("result").dataset.job || "",
      history: Array.from(document.querySelectorAll("#history li")).map((li) =>
        li.innerText.trim().replace(/\s+/g, " "),
      ),
    };
  });
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1180, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: "light",
    timeout: 60_000,
  });
  context.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(origin) && !url.startsWith("data:") && !url.startsWith("blob:")) {
      external.push(url);
    }
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });

  const response = await page.goto(`${base}/`, { waitUntil: "load" });
  check(response?.ok(), `GET / answered ${response?.status()}`);
  check((await page.title()).includes("Tandem"), `unexpected title "${await page.title()}"`);
  const label = await page.locator("label[for=file]").textContent();
  check(/choose a file/i.test(label ?? ""), "the file input has no visible label");
  step(`opened ${base}/ ("${await page.title()}")`);

  await page.locator("#file").setInputFiles(photo);
  const name = photo.split(/[\\/]/).pop();
  step(`uploaded ${name} with the file input`);

  let seen = await waitFor(page, "fast", ["done", "failed"], FAST_TIMEOUT_MS, name);
  check(
    seen.fast === FAST_LABEL,
    `fast label is "${seen.fast}", expected "${FAST_LABEL}" (status line: "${seen.status}")`,
  );
  check(/ms round trip/.test(seen.fastTime), `no fast timing shown ("${seen.fastTime}")`);
  console.log(`fast: ${seen.fast} ${seen.fastScore} (${seen.fastModel}; ${seen.fastTime})`);
  const beforeSlow = await geometry(page);

  seen = await waitFor(page, "slow", ["succeeded", "failed"], SLOW_TIMEOUT_MS, name);
  check(
    seen.slow === SLOW_LABEL,
    `refined label is "${seen.slow}", expected "${SLOW_LABEL}" (status line: "${seen.status}")`,
  );
  check(/after submit/.test(seen.slowTime), `no slow timing shown ("${seen.slowTime}")`);
  check(seen.status.startsWith(`refined: ${SLOW_LABEL}`), `status line is "${seen.status}"`);
  check(seen.verdict === "agrees", `verdict is "${seen.verdict}", expected "agrees"`);
  check(seen.decidedBy === "slow model", `decided by "${seen.decidedBy}", expected "slow model"`);
  console.log(`decided by: ${seen.decidedBy}`);
  console.log(`refined: ${seen.slow} ${seen.slowScore} (${seen.slowModel}; ${seen.slowTime})`);
  console.log(`status line: ${seen.status}`);

  const afterSlow = await geometry(page);
  check(
    sameGeometry(beforeSlow, afterSlow),
    `the layout moved when the refined label arrived: ${JSON.stringify({ beforeSlow, afterSlow })}`,
  );
  step("the result card kept its place and size when the refined label arrived");
  check(seen.history.length === 1, `history has ${seen.history.length} entries, expected 1`);
  check(seen.history[0].includes(FAST_LABEL), `history entry is "${seen.history[0]}"`);
  step(`history: ${seen.history[0]}`);

  await page.screenshot({ path: screenshot, fullPage: true, animations: "disabled" });
  console.log(`screenshot: ${screenshot}`);

  // Keyboard only: Tab to the "Coffee" sample and press Enter.
  let focused = "";
  for (let i = 0; i < 20 && focused !== "coffee.jpg"; i += 1) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => document.activeElement?.dataset?.name ?? "");
  }
  check(focused === "coffee.jpg", "could not reach the Coffee sample with the Tab key");
  await page.keyboard.press("Enter");
  step("picked the Coffee sample with Tab and Enter");
  seen = await waitFor(page, "slow", ["succeeded", "failed"], SLOW_TIMEOUT_MS, "coffee.jpg");
  check(seen.fast && seen.fast !== "—", `no fast label for the sample (status: "${seen.status}")`);
  check(seen.slow && seen.verdict, `no refined label for the sample (status: "${seen.status}")`);
  console.log(`sample: fast ${seen.fast} ${seen.fastScore}, refined ${seen.slow} ${seen.slowScore}`);
  check(seen.history.length === 2, `history has ${seen.history.length} entries, expected 2`);

  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: secondScreenshot, fullPage: true, animations: "disabled" });
  console.log(`screenshot: ${secondScreenshot}`);
  await page.emulateMedia({ colorScheme: "light" });

  // escalate=never: the fast label is final at once, decided by the fast model.
  const selectLabel = await page.locator("label[for=escalate]").textContent();
  check(/slow model/i.test(selectLabel ?? ""), "the escalation select has no visible label");
  await page.locator("#escalate").selectOption("never");
  const before = seen.job;
  await page.locator("#file").setInputFiles(photo);
  step(`chose "never" for the slow model and uploaded ${name} again`);
  seen = await waitFor(
    page,
    "slow",
    ["skipped", "expired", "succeeded", "failed"],
    FAST_TIMEOUT_MS,
    name,
    before,
  );
  const result = await page.evaluate(() => document.getElementById("result").dataset.slow);
  check(result === "skipped", `the slow row is "${result}", expected "skipped" (status: "${seen.status}")`);
  check(seen.fast === FAST_LABEL, `fast label is "${seen.fast}", expected "${FAST_LABEL}"`);
  check(seen.decidedBy === "fast model", `decided by "${seen.decidedBy}", expected "fast model"`);
  check(seen.slow === "not needed", `the refined label is "${seen.slow}", expected "not needed"`);
  check(seen.status.startsWith("Final: the fast label"), `status line is "${seen.status}"`);
  check(seen.history.length === 3, `history has ${seen.history.length} entries, expected 3`);
  check(
    seen.history[0].includes("final (fast model)"),
    `history entry is "${seen.history[0]}", expected it to say "final (fast model)"`,
  );
  const record = await page.evaluate(async (id) => (await fetch(`/job/${id}`)).json(), seen.job);
  check(
    record.status === "succeeded" && record.decided_by === "fast" && record.escalated === false,
    `the job is ${JSON.stringify({ status: record.status, decided_by: record.decided_by, escalated: record.escalated })}`,
  );
  console.log(`never: fast ${seen.fast} ${seen.fastScore}, decided by ${seen.decidedBy}`);
  console.log(`status line: ${seen.status}`);

  check(external.length === 0, `the page fetched from elsewhere: ${external.join(", ")}`);
  check(problems.length === 0, problems.join("; "));
  console.log(
    "PASS: the page showed the fast label, then the refined one, without a layout jump, " +
      "and who decided each (slow model; fast model with escalate=never)",
  );
  process.exitCode = 0;
} catch (error) {
  console.error(`FAIL: ${error.message}`);
  if (problems.length) console.error(`also: ${problems.join("; ")}`);
  if (page) {
    const failed = screenshot.replace(/(\.png)?$/i, "-failure.png");
    await page.screenshot({ path: failed, fullPage: true }).catch(() => {});
    console.error(`screenshot of the failure: ${failed}`);
  }
  process.exitCode = 1;
} finally {
  clearTimeout(guard);
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
