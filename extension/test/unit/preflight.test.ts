// Unit tests of the Python/acepilot check (extension/src/preflight.ts) against real interpreters.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { interpret, preflight } from "../../src/preflight";

const root = join(__dirname, "..", "..");
const scratch = mkdtempSync(join(tmpdir(), "acepilot-preflight-"));
after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

test("a missing interpreter is reported with the install command", async () => {
  const result = await preflight(join(scratch, "no-such-python"), scratch);
  assert.ok(!result.ok && result.kind === "python-missing", JSON.stringify(result));
  assert.match(result.message, /cannot run the Python interpreter/);
  assert.match(result.message, /pip install acepilot/);
  assert.match(result.message, /acepilot\.server\.python/);
});

test("a Python without acepilot is reported with both install commands", async () => {
  // A real, empty virtual environment: no acepilot, no system site-packages.
  const venv = join(scratch, "empty-venv");
  execFileSync("python3", ["-m", "venv", "--without-pip", venv]);
  const python = join(venv, "bin", "python");
  const result = await preflight(python, scratch);
  assert.ok(!result.ok, "an empty venv cannot have acepilot");
  assert.equal(result.kind, "acepilot-missing");
  assert.match(result.message, new RegExp(`${python.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} -m pip install acepilot`));
  assert.match(result.message, /pip install -e \./);
});

const venvPython = join(root, ".venv", "bin", "python");
test("the repository's virtualenv has acepilot", { skip: !existsSync(venvPython) && "no .venv" }, async () => {
  const result = await preflight(venvPython, scratch);
  assert.deepEqual(result.ok ? "ok" : result.message, "ok");
  assert.ok(result.ok && /^\d+\.\d+/.test(result.version), JSON.stringify(result));
});

test("other failures say why, including a timeout", () => {
  const crashed = interpret("py", { code: 1 }, "", "Traceback...\nSyntaxError: invalid syntax\n");
  assert.ok(!crashed.ok && crashed.kind === "failed");
  assert.match(crashed.message, /SyntaxError: invalid syntax/);
  const slow = interpret("py", { killed: true, signal: "SIGTERM" }, "", "");
  assert.ok(!slow.ok);
  assert.match(slow.message, /timed out/);
  const paths = interpret("/opt/my python/bin/python", { code: 1 }, "", "ModuleNotFoundError: No module named 'server'");
  assert.ok(!paths.ok);
  assert.match(paths.message, /"\/opt\/my python\/bin\/python" -m pip install acepilot/);
});
