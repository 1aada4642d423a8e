// The team server's dashboard in a real browser: Debian chromium driven by playwright-core.
//
//   node tests/extension/dashboard_browser.mjs CONFIG.json
//
// tests/extension/test_dashboard_browser.py starts a real team server with the
// tiny model and an admin token, writes CONFIG (url, adminToken, chromium,
// artifacts, result, load) and checks what this script records in
// CONFIG.result. The script drives the pages as a person would and sends the
// scripted load from Node (fetch): it records what it sees, the API's answers
// and the statuses, and fails with a screenshot when a page does not show
// what the step needs.
//
// Steps: /dashboard without a session lands on the sign-in page; a wrong
// admin token is refused; the right one signs in; create "dev-a" (its token
// read from the page, shown once) and "dev-b", revoke "dev-b"; the load:
// config.load.requests completions with dev-a, one with dev-b (refused: 401),
// one malformed (400), telemetry events; the report page's numbers and the
// JSON report read back; a POST with a wrong CSRF token, and a fresh browser
// context without a session, refused.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const result = { steps: [], screenshots: [] };
const WAIT = config.stepTimeoutMs ?? 60_000;

function step(name, extra = {}) {
  const entry = { name, atMs: Date.now() - started, ...extra };
  result.steps.push(entry);
  process.stderr.write(`dashboard: ${(entry.atMs / 1000).toFixed(1)}s ${name}\n`);
}

function save() {
  result.durationMs = Date.now() - started;
  writeFileSync(config.result, JSON.stringify(result, null, 2));
}

async function completion(token, body) {
  const response = await fetch(`${config.url}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  await response.text();
  return response.status;
}

/** Every `[data-col]` cell of a table, by row key: {key: {column: text}}. */
async function table(page, id) {
  return page.locator(`#${id} tbody tr[data-key]`).evaluateAll((rows) =>
    Object.fromEntries(
      rows.map((row) => [
        row.getAttribute("data-key"),
        Object.fromEntries(
          [...row.querySelectorAll("[data-col]")].map((c) => [c.getAttribute("data-col"), c.textContent.trim()]),
        ),
      ]),
    ),
  );
}

async function main() {
  mkdirSync(config.artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const shoot = async (name, fullPage = false) => {
    const file = join(config.artifacts, `dashboard-${String(result.screenshots.length + 1).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path: file, fullPage });
    result.screenshots.push(file);
  };
  // Requests leaving the team server's origin would show up here: there must be none.
  result.foreignRequests = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(config.url) && !request.url().startsWith("data:")) {
      result.foreignRequests.push(request.url());
    }
  });
  try {
    // 1. No session: the sign-in page.
    await page.goto(`${config.url}/dashboard`);
    result.unauthenticatedUrl = page.url();
    await page.locator("#token").waitFor();
    step("sign-in page");
    await shoot("sign-in");

    // 2. A wrong admin token is refused, the right one signs in.
    await page.fill("#token", "acpadm_wrong");
    await page.click("#sign-in");
    result.wrongSignIn = (await page.locator("#error").textContent()).trim();
    await page.fill("#token", config.adminToken);
    await page.click("#sign-in");
    await page.locator("#totals").waitFor();
    result.signedInUrl = page.url();
    result.cookies = (await context.cookies()).map(({ name, httpOnly, sameSite, path }) => ({ name, httpOnly, sameSite, path }));
    step("signed in");

    // 3. Tokens: create dev-a and dev-b (each shown once), revoke dev-b.
    await page.click("#nav-tokens");
    const tokens = {};
    for (const name of ["dev-a", "dev-b"]) {
      await page.fill("#name", name);
      await page.click("#create");
      tokens[name] = (await page.locator("#new-token").textContent()).trim();
    }
    await shoot("token-created");
    await page.click('[data-revoke="dev-b"]');
    await page.locator("#notice").waitFor();
    result.revokedState = (await page.locator('tr[data-token="dev-b"] [data-col="state"]').textContent()).trim();
    result.tokenShownAgain = (await page.content()).includes(tokens["dev-a"]);
    await shoot("token-revoked");
    step("tokens created and revoked");

    // 4. The scripted load: completions (a few at a time), a revoked token, a malformed request, telemetry.
    const statuses = [];
    const { requests, concurrency, maxTokens } = config.load;
    for (let sent = 0; sent < requests; sent += concurrency) {
      const batch = [];
      for (let i = sent; i < Math.min(requests, sent + concurrency); i++) {
        batch.push(completion(tokens["dev-a"], { prompt: `def f${i}(x):\n`, max_tokens: maxTokens, temperature: 0 }));
      }
      statuses.push(...(await Promise.all(batch)));
    }
    result.loadStatuses = statuses;
    result.revokedStatus = await completion(tokens["dev-b"], { prompt: "x = ", max_tokens: 1 });
    result.malformedStatus = await completion(tokens["dev-a"], { prompt: "x", max_tokens: 0 });
    const telemetry = await fetch(`${config.url}/v1/telemetry`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokens["dev-a"]}`, "content-type": "application/json" },
      body: JSON.stringify({ events: config.load.events }),
    });
    result.telemetryStatus = telemetry.status;
    step("load sent", { statuses });

    // 5. The report page and the JSON report, same filter.
    await page.goto(`${config.url}/dashboard?period=1h&token=dev-a`);
    await page.locator("#totals").waitFor();
    result.page = {
      totals: Object.fromEntries(
        await page.locator("#totals [data-col]").evaluateAll((cells) => cells.map((c) => [c.getAttribute("data-col"), c.textContent.trim()])),
      ),
      byToken: await table(page, "by-token"),
      byVersion: await table(page, "by-version"),
      byLanguage: await table(page, "by-language"),
      errors: await table(page, "errors"),
      charts: await page.locator("svg.chart").count(),
      model: (await page.locator("#model").textContent()).trim(),
    };
    await shoot("report", true);
    const api = await page.request.get(`${config.url}/dashboard/api/report?period=1h&token=dev-a`);
    result.api = await api.json();
    // all tokens, for the docs' screenshot
    await page.goto(`${config.url}/dashboard?period=1h`);
    await page.locator("#totals").waitFor();
    await shoot("report-all", true);
    step("report read");

    // 6. CSRF: the session's cookie with a wrong form token is refused (and creates nothing).
    const forged = await page.request.post(`${config.url}/dashboard/tokens`, {
      form: { csrf: "not-the-session-token", name: "mallory" },
    });
    result.csrfStatus = forged.status();
    result.csrfText = await forged.text();
    await page.goto(`${config.url}/dashboard/tokens`);
    result.malloryListed = (await page.locator('tr[data-token="mallory"]').count()) > 0;

    // 7. Without a session (a fresh context): sign-in page, 401 on the API and on forms.
    const stranger = await browser.newContext();
    const other = await stranger.newPage();
    await other.goto(`${config.url}/dashboard/tokens`);
    result.strangerUrl = other.url();
    result.strangerApi = (await other.request.get(`${config.url}/dashboard/api/report`)).status();
    result.strangerPost = (await other.request.post(`${config.url}/dashboard/tokens/revoke`, { form: { csrf: "x", name: "dev-a" } })).status();
    await stranger.close();
    step("refusals checked");

    // 8. Sign out.
    await page.goto(`${config.url}/dashboard`);
    await page.click("#logout");
    await page.locator("#token").waitFor();
    result.afterLogoutUrl = page.url();
    result.ok = true;
  } catch (error) {
    result.ok = false;
    result.error = String(error?.stack ?? error);
    await shoot("failure").catch(() => undefined);
  } finally {
    await browser.close();
    save();
  }
}

main().catch((error) => {
  result.ok = false;
  result.error = String(error?.stack ?? error);
  save();
  process.exitCode = 1;
});
