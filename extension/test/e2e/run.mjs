// End to end in a real VS Code: code-server + Debian chromium, driven by playwright-core.
//
//   node extension/test/e2e/run.mjs CONFIG.json
//
// tests/extension/test_vscode_e2e.py writes CONFIG (paths, settings, scenario),
// runs this script and checks what it reports in CONFIG.result against the
// real language server. This script only drives the UI and records what it
// sees; it asserts the UI's own preconditions (ready before typing, ghost text
// appeared, file saved) and fails with a screenshot when one is not met.
//
// Scenarios:
//   "complete": wait for "Acepilot ready", open main.py, go to the end of the
//     file and type config.type1, read the ghost text and the cursor position,
//     Tab, save, read the file, read the statistics (Acepilot: Show Statistics),
//     click the status bar item twice (disabled, ready); kill the server process, wait for the restarted
//     one to be ready, type config.type2 at the end, read the ghost text,
//     Escape, save, read the file.
//   "missing": the configured Python has no acepilot: read the error toast
//     and the status bar item.
//
// Every wait is for a condition with a generous deadline (the machine may be
// loaded), never a fixed sleep.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const started = Date.now();
const result = { scenario: config.scenario, steps: [], screenshots: [] };
const LONG = config.readyTimeoutMs ?? 240_000; // server start + model load on a loaded machine
const SHORT = config.stepTimeoutMs ?? 60_000;

function step(name, extra = {}) {
  const entry = { name, atMs: Date.now() - started, ...extra };
  result.steps.push(entry);
  process.stderr.write(`e2e: ${(entry.atMs / 1000).toFixed(1)}s ${name}\n`);
}

function save() {
  result.durationMs = Date.now() - started;
  writeFileSync(config.result, JSON.stringify(result, null, 2));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function until(what, probe, timeoutMs, intervalMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last) {
      return last;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Language-server processes started by this test's code-server (found by the marker in their environment). */
function serverPids() {
  const pids = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (!cmdline.includes("acepilot.server.cli") || !cmdline.includes("serve")) continue;
      const environ = readFileSync(`/proc/${name}/environ`, "utf8");
      if (environ.includes(`ACEPILOT_E2E_MARK=${config.marker}`)) pids.push(Number(name));
    } catch {
      // the process exited meanwhile, or is not ours to read
    }
  }
  return pids;
}

const codeServerArgs = (dataDir) => [
  "--config",
  join(dataDir, "config.yaml"),
  "--auth",
  "none",
  "--user-data-dir",
  join(dataDir, "user"),
  "--extensions-dir",
  join(dataDir, "extensions"),
  "--disable-telemetry",
  "--disable-update-check",
  "--disable-workspace-trust",
  "--disable-getting-started-override",
  "--ignore-last-opened",
];

async function main() {
  const dataDir = config.workdir;
  const workspace = join(dataDir, "workspace");
  mkdirSync(workspace, { recursive: true });
  mkdirSync(join(dataDir, "user", "User"), { recursive: true });
  mkdirSync(config.artifacts, { recursive: true });
  writeFileSync(join(dataDir, "config.yaml"), "auth: none\ncert: false\n");
  writeFileSync(join(workspace, "main.py"), config.source);
  const userSettings = {
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": false,
    "workbench.enableExperiments": false,
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "extensions.autoUpdate": false,
    "extensions.autoCheckUpdates": false,
    "security.workspace.trust.enabled": false,
    "chat.commandCenter.enabled": false,
    "files.autoSave": "off",
    "editor.inlineSuggest.enabled": true,
    // the suggest widget would take Tab and hide ghost text: off, as the test is about ghost text
    "editor.quickSuggestions": { other: "off", comments: "off", strings: "off" },
    "editor.wordBasedSuggestions": "off",
    "editor.suggestOnTriggerCharacters": false,
    "editor.acceptSuggestionOnEnter": "off",
    ...config.settings,
  };
  writeFileSync(join(dataDir, "user", "User", "settings.json"), JSON.stringify(userSettings, null, 2));

  const install = spawnSync(
    config.codeServer,
    [...codeServerArgs(dataDir), "--install-extension", config.vsix, "--force"],
    { encoding: "utf8", timeout: SHORT * 2 },
  );
  if (install.status !== 0) {
    throw new Error(`installing the .vsix failed: ${install.stdout}\n${install.stderr}`);
  }
  step("vsix installed");

  const port = await freePort();
  const log = join(config.artifacts, `code-server-${config.scenario}.log`);
  const out = (await import("node:fs")).openSync(log, "w");
  const codeServer = spawn(
    config.codeServer,
    [...codeServerArgs(dataDir), "--bind-addr", `127.0.0.1:${port}`, workspace],
    {
      detached: true, // its own process group: killed as a whole at the end
      stdio: ["ignore", out, out],
      env: { ...process.env, ACEPILOT_E2E_MARK: config.marker, ...(config.env ?? {}) },
    },
  );
  let browser;
  try {
    await until(
      "code-server to answer",
      async () => {
        try {
          return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      LONG,
    );
    step("code-server up", { port });
    browser = await chromium.launchPersistentContext(join(dataDir, "browser"), {
      executablePath: config.chromium,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    const page = browser.pages()[0] ?? (await browser.newPage());
    const shoot = async (name) => {
      const file = join(config.artifacts, `${config.scenario}-${String(result.screenshots.length + 1).padStart(2, "0")}-${name}.png`);
      await page.screenshot({ path: file });
      result.screenshots.push(file);
    };
    try {
      await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`);
      await page.locator(".monaco-workbench").waitFor({ timeout: LONG });
      step("workbench loaded");
      const status = page.locator('#workbench\\.parts\\.statusbar [aria-label^="Acepilot "]');
      const label = async () => (await status.count()) > 0 ? await status.first().getAttribute("aria-label") : null;
      if (config.scenario === "missing") {
        await missing(page, label, shoot);
      } else {
        await complete(page, label, shoot);
      }
    } catch (error) {
      await shoot("failure").catch(() => undefined);
      throw error;
    }
  } finally {
    await browser?.close().catch(() => undefined);
    try {
      process.kill(-codeServer.pid, "SIGTERM");
    } catch {
      // already gone
    }
    // the extension host's child (the language server) is in the same group; make sure
    for (const pid of serverPids()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

async function waitLabel(label, wanted, timeoutMs) {
  return until(
    `the status bar to say "${wanted}"`,
    async () => {
      const now = await label();
      if (now === "Acepilot error" && wanted !== now) {
        throw new Error(`the status bar says "${now}" while waiting for "${wanted}"`);
      }
      return now === wanted;
    },
    timeoutMs,
  );
}

/** Ghost text as shown: the inline part on the cursor's line, then any lines below it. */
async function ghostText(page) {
  return page.evaluate(() => {
    const clean = (s) => (s ?? "").replace(/\u00a0/g, " ");
    const inline = [...document.querySelectorAll(".monaco-editor .view-lines span.ghost-text-decoration")]
      .map((el) => clean(el.textContent))
      .join("");
    const below = [...document.querySelectorAll(".monaco-editor .ghost-text .view-line")].map((el) => clean(el.textContent));
    const html = [...document.querySelectorAll(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text")]
      .map((el) => el.outerHTML)
      .join("\n");
    return { inline, below, html };
  });
}

async function stableGhost(page) {
  let previous = null;
  let since = Date.now();
  return until(
    "ghost text (span.ghost-text-decoration)",
    async () => {
      const ghost = await ghostText(page);
      const key = JSON.stringify([ghost.inline, ghost.below]);
      if (ghost.inline === "" && ghost.below.length === 0) {
        previous = null;
        return false;
      }
      if (key !== previous) {
        previous = key;
        since = Date.now();
        return false;
      }
      return Date.now() - since >= 600 ? ghost : false; // unchanged for 0.6 s: the final answer
    },
    SHORT,
    100,
  );
}

async function cursor(page) {
  const text = await page.locator("#status\\.editor\\.selection").first().textContent({ timeout: SHORT });
  const match = /Ln (\d+), Col (\d+)/.exec(text ?? "");
  if (!match) throw new Error(`no cursor position in the status bar: ${text}`);
  return { line: Number(match[1]), column: Number(match[2]) };
}

function readWorkspaceFile() {
  return readFileSync(join(config.workdir, "workspace", "main.py"), "utf8");
}

async function saveAndRead(page, before) {
  await page.keyboard.press("Control+s");
  return until("main.py to be saved", () => {
    const text = readWorkspaceFile();
    return text !== before ? text : false;
  }, SHORT);
}

async function openMain(page) {
  await page.getByRole("treeitem", { name: "main.py" }).first().click({ timeout: LONG });
  const editor = page.locator(".editor-instance .monaco-editor .view-lines").first();
  await editor.waitFor({ timeout: SHORT });
  await until("main.py in the editor", async () => ((await editor.textContent()) ?? "").replace(/\u00a0/g, " ").includes("def "), SHORT);
  await editor.click();
}

async function complete(page, label, shoot) {
  await waitLabel(label, "Acepilot ready", LONG);
  result.firstPids = serverPids();
  step("extension ready", { pids: result.firstPids });
  await shoot("ready");
  await openMain(page);
  await page.keyboard.press("Control+End");
  await page.keyboard.type(config.type1);
  const ghost1 = await stableGhost(page);
  result.ghost1 = ghost1;
  result.cursor1 = await cursor(page);
  step("ghost text shown", { ghost: ghost1.inline });
  await shoot("ghost-text");
  const before = readWorkspaceFile();
  await page.keyboard.press("Tab");
  await until("the ghost text to be accepted", async () => (await ghostText(page)).inline === "", SHORT);
  result.afterTab = await saveAndRead(page, before);
  step("accepted with Tab and saved");
  await shoot("accepted");
  result.stats = await runCommandForToast(page, "Acepilot: Show Statistics", "Acepilot statistics:");
  step("statistics", { stats: result.stats });
  // The status bar item toggles completions off and on.
  await page.locator('#workbench\\.parts\\.statusbar [aria-label="Acepilot ready"]').first().click();
  await waitLabel(label, "Acepilot disabled", SHORT);
  result.toggledOff = await label();
  await page.locator('#workbench\\.parts\\.statusbar [aria-label="Acepilot disabled"]').first().click();
  await waitLabel(label, "Acepilot ready", SHORT);
  step("toggled off and on from the status bar");

  // The server dies mid-session: the extension restarts it and completions resume.
  const victims = serverPids();
  if (victims.length !== 1) throw new Error(`expected one language server process, found ${victims}`);
  process.kill(victims[0], "SIGKILL");
  result.killed = victims[0];
  step("server killed", { pid: victims[0] });
  await until("the server to be restarted", () => {
    const pids = serverPids();
    return pids.length === 1 && pids[0] !== victims[0] ? pids : false;
  }, LONG);
  result.secondPids = serverPids();
  await waitLabel(label, "Acepilot ready", LONG);
  step("restarted server ready", { pids: result.secondPids });
  await shoot("restarted");
  await page.locator(".editor-instance .monaco-editor .view-lines").first().click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type(config.type2);
  const ghost2 = await stableGhost(page);
  result.ghost2 = ghost2;
  result.cursor2 = await cursor(page);
  step("ghost text after the restart", { ghost: ghost2.inline });
  await shoot("ghost-after-restart");
  await page.keyboard.press("Escape");
  await until("the ghost text to be dismissed", async () => (await ghostText(page)).inline === "", SHORT);
  result.beforeSecond = await saveAndRead(page, result.afterTab);
  step("saved the document state of the second completion");
}

/** Run a command from the palette (F1) and return the text of the toast it shows. */
async function runCommandForToast(page, title, toastPrefix) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ timeout: SHORT });
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: SHORT });
  await page.keyboard.press("Enter");
  const toast = page.locator(".notifications-toasts .notification-toast", { hasText: toastPrefix });
  await toast.first().waitFor({ timeout: SHORT });
  const text = (await toast.first().locator(".notification-list-item-message").textContent()) ?? "";
  await page.keyboard.press("Escape");
  return text;
}

async function missing(page, label, shoot) {
  const toast = page.locator(".notifications-toasts .notification-toast", { hasText: "Acepilot" });
  await toast.first().waitFor({ timeout: LONG });
  result.toast = (await toast.first().locator(".notification-list-item-message").textContent()) ?? "";
  await waitLabel(label, "Acepilot error", SHORT);
  result.statusLabel = await label();
  step("error shown", { toast: result.toast });
  await shoot("missing-acepilot");
}

main()
  .then(() => {
    result.ok = true;
    save();
  })
  .catch((error) => {
    result.ok = false;
    result.error = String(error?.stack ?? error);
    save();
    process.stderr.write(`e2e failed: ${result.error}\n`);
    process.exitCode = 1;
  });
