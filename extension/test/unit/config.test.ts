// Unit tests of the settings mapping (extension/src/config.ts), run by `npm test`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { toLaunchSettings, toServerSettings } from "../../src/config";

const root = join(__dirname, "..", "..");

interface Manifest {
  contributes: { configuration: { properties: Record<string, { default?: unknown }> } };
}

function manifestDefaults(): Record<string, unknown> {
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as Manifest;
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(manifest.contributes.configuration.properties)) {
    out[key] = spec.default;
  }
  return out;
}

test("every setting in package.json is mapped or is a launch setting", () => {
  assert.deepEqual(Object.keys(manifestDefaults()).sort(), [
    "acepilot.backend",
    "acepilot.debounceMs",
    "acepilot.enable",
    "acepilot.idlePrefillMs",
    "acepilot.languages",
    "acepilot.maxTokens",
    "acepilot.model",
    "acepilot.registry",
    "acepilot.remote.model",
    "acepilot.remote.url",
    "acepilot.server.args",
    "acepilot.server.python",
    "acepilot.telemetry",
    "acepilot.temperature",
    "acepilot.threads",
    "acepilot.workspaceContext",
    "acepilot.workspaceContextTokens",
  ]);
});

test("the manifest's defaults map to the server's defaults", () => {
  const d = manifestDefaults();
  const mapped = toServerSettings(
    {
      enable: d["acepilot.enable"],
      languages: d["acepilot.languages"],
      backend: d["acepilot.backend"],
      model: d["acepilot.model"],
      registry: d["acepilot.registry"],
      remote: { url: d["acepilot.remote.url"], model: d["acepilot.remote.model"] },
      maxTokens: d["acepilot.maxTokens"],
      temperature: d["acepilot.temperature"],
      debounceMs: d["acepilot.debounceMs"],
      threads: d["acepilot.threads"],
      telemetry: d["acepilot.telemetry"],
      workspaceContext: d["acepilot.workspaceContext"],
      workspaceContextTokens: d["acepilot.workspaceContextTokens"],
      idlePrefillMs: d["acepilot.idlePrefillMs"],
    },
    undefined,
  );
  // server/lsp/config.py: Config() defaults, but for debounceMs: the server waits 40 ms
  // for editors that ask on every keystroke; VS Code waits 50 ms itself.
  assert.deepEqual(mapped, {
    enable: true,
    languages: { plaintext: false, markdown: false, scminput: false },
    backend: "local",
    model: null,
    registry: null,
    remoteUrl: null,
    remoteModel: null,
    remoteToken: null,
    maxNewTokens: 64,
    temperature: 0,
    debounceMs: 0,
    threads: null,
    telemetry: true,
    workspaceContext: true,
    workspaceContextTokens: 384,
    idlePrefillMs: 300,
  });
});

test("every key sent is one the server checks (acepilot/server/lsp/config.py CHECKS)", () => {
  const source = readFileSync(join(root, "acepilot", "server", "lsp", "config.py"), "utf8");
  const block = /CHECKS[^=]*=\s*\{([\s\S]*?)\n\}/.exec(source);
  assert.ok(block, "CHECKS not found in acepilot/server/lsp/config.py");
  const known = new Set([...(block[1] ?? "").matchAll(/^\s*"(\w+)":/gm)].map((m) => m[1]));
  const sent = Object.keys(toServerSettings({}, "t"));
  for (const key of sent) {
    assert.ok(known.has(key), `the server does not know ${key}`);
  }
});

test("a full configuration maps to the server's keys, with the token from secret storage", () => {
  const mapped = toServerSettings(
    {
      enable: false,
      languages: { python: false, go: true, bad: "yes" },
      backend: "remote",
      model: "  codegen-350m ",
      registry: "/srv/registry",
      remote: { url: "http://gpu-box:8000/v1", model: "codegen-2b" },
      maxTokens: 128,
      temperature: 0.2,
      debounceMs: 75,
      threads: 4,
      telemetry: false,
      workspaceContext: false,
      workspaceContextTokens: 512,
      idlePrefillMs: 0,
    },
    " s3cret ",
  );
  assert.deepEqual(mapped, {
    enable: false,
    languages: { python: false, go: true },
    backend: "remote",
    model: "codegen-350m",
    registry: "/srv/registry",
    remoteUrl: "http://gpu-box:8000/v1",
    remoteModel: "codegen-2b",
    remoteToken: "s3cret",
    maxNewTokens: 128,
    temperature: 0.2,
    debounceMs: 75,
    threads: 4,
    telemetry: false,
    workspaceContext: false,
    workspaceContextTokens: 512,
    idlePrefillMs: 0,
  });
});

test("empty strings and wrong types become null (the server's default), not an invalid update", () => {
  const mapped = toServerSettings(
    {
      enable: "no",
      languages: ["python"],
      backend: "cloud",
      model: "   ",
      registry: 3,
      remote: null,
      maxTokens: "many",
      temperature: Number.NaN,
      debounceMs: Number.POSITIVE_INFINITY,
      threads: null,
      telemetry: "no",
      workspaceContext: "no",
      workspaceContextTokens: "all",
      idlePrefillMs: "soon",
    },
    "",
  );
  assert.deepEqual(mapped, {
    enable: true,
    languages: null,
    backend: null,
    model: null,
    registry: null,
    remoteUrl: null,
    remoteModel: null,
    remoteToken: null,
    maxNewTokens: null,
    temperature: null,
    debounceMs: null,
    threads: null,
    telemetry: true,
    workspaceContext: true,
    workspaceContextTokens: null,
    idlePrefillMs: null,
  });
});

test("the token never comes from settings", () => {
  const raw = { remote: { url: "http://x:1", token: "from-settings" } } as unknown as Parameters<
    typeof toServerSettings
  >[0];
  assert.equal(toServerSettings(raw, undefined).remoteToken, null);
});

test("launch settings: interpreter path and string arguments only", () => {
  assert.deepEqual(toLaunchSettings(" /opt/py/bin/python ", ["-v", 3, "--x"]), {
    python: "/opt/py/bin/python",
    args: ["-v", "--x"],
  });
  assert.deepEqual(toLaunchSettings("", "-v"), { python: null, args: [] });
  assert.deepEqual(toLaunchSettings(null, undefined), { python: null, args: [] });
});
