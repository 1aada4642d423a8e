// Unit tests of the status bar state machine (extension/src/status.ts), run by `npm test`.
import assert from "node:assert/strict";
import { test } from "node:test";
import { StatusModel, summarizeStats } from "../../src/status";

const READY = {
  state: "ready",
  backend: "local",
  model: "tiny v1",
  device: "cpu",
  message: null,
  latency: { totalMs: 12.4, prefillMs: 8, decodeMs: 4 },
};

test("starting -> loading -> ready, with model, device and latency in the tooltip", () => {
  const model = new StatusModel();
  model.starting();
  assert.equal(model.state, "starting");
  assert.equal(model.view().label, "Acepilot starting");
  model.serverStatus({ state: "loading", backend: "local", model: "tiny", latency: { totalMs: 0 } });
  assert.equal(model.state, "starting");
  model.serverStatus(READY);
  const view = model.view();
  assert.equal(view.state, "ready");
  assert.equal(view.label, "Acepilot ready");
  assert.equal(view.text, "$(sparkle) Acepilot 12 ms");
  assert.match(view.tooltip, /Model: tiny v1/);
  assert.match(view.tooltip, /Device: cpu/);
  assert.match(view.tooltip, /Backend: local/);
  assert.match(view.tooltip, /Last completion: 12 ms/);
});

test("generating while requests are in flight, counted", () => {
  const model = new StatusModel();
  model.starting();
  model.serverStatus(READY);
  model.requestStarted();
  model.requestStarted();
  assert.equal(model.state, "generating");
  model.requestFinished();
  assert.equal(model.state, "generating");
  model.requestFinished();
  assert.equal(model.state, "ready");
  model.requestFinished(); // an unmatched finish does not go negative
  model.requestStarted();
  assert.equal(model.state, "generating");
});

test("a request before the server is ready stays 'starting'", () => {
  const model = new StatusModel();
  model.starting();
  model.requestStarted();
  assert.equal(model.state, "starting");
});

test("disabled overrides ready and generating but not an error", () => {
  const model = new StatusModel();
  model.starting();
  model.serverStatus(READY);
  model.setEnabled(false);
  assert.equal(model.state, "disabled");
  assert.match(model.view().tooltip, /Click to enable/);
  model.requestStarted();
  assert.equal(model.state, "disabled");
  model.failed("Acepilot: the Python \"python3\" does not have acepilot installed.");
  assert.equal(model.state, "error");
  assert.match(model.view().tooltip, /does not have acepilot/);
  model.setEnabled(true);
  assert.equal(model.state, "error");
});

test("a server error is shown until the server is ready again; a crash restarts at 'starting'", () => {
  const model = new StatusModel();
  model.starting();
  model.serverStatus({ state: "error", message: "no model in the registry" });
  assert.equal(model.state, "error");
  assert.match(model.view().tooltip, /no model in the registry/);
  model.serverStatus({ state: "loading" });
  assert.equal(model.state, "starting");
  model.serverStatus(READY);
  assert.equal(model.state, "ready");
  model.requestStarted();
  model.starting(); // the process died with a request in flight: the count resets
  assert.equal(model.state, "starting");
  model.serverStatus(READY);
  assert.equal(model.state, "ready");
});

test("an error status without a message still explains itself; the latency survives restarts", () => {
  const model = new StatusModel();
  model.starting();
  model.serverStatus(READY);
  model.serverStatus({ state: "error" });
  assert.match(model.view().tooltip, /reported an error/);
  model.starting();
  model.serverStatus({ ...READY, latency: { totalMs: 0 } });
  assert.equal(model.view().text, "$(sparkle) Acepilot 12 ms");
});

test("stopped on purpose shows 'starting' until the next start, and the latest latency wins", () => {
  const model = new StatusModel();
  model.stopped();
  assert.equal(model.state, "starting");
  model.starting();
  model.serverStatus({ ...READY, latency: { totalMs: 230.6 } });
  assert.equal(model.view().text, "$(sparkle) Acepilot 231 ms");
});

test("the statistics summary reads the server's snapshot and survives missing fields", () => {
  const snapshot = {
    requests: 7,
    model_requests: 3,
    completions: { shown: 2, accepted: 1, rejected: 0, by_language: { python: { shown: 2 } } },
    latency: { window: 200, count: 3, p50_ms: 41.6, p95_ms: 90 },
  };
  assert.equal(
    summarizeStats(snapshot),
    "Acepilot statistics: 7 requests, 3 model requests, 2 shown, 1 accepted, median latency 42 ms.",
  );
  assert.equal(
    summarizeStats(null),
    "Acepilot statistics: 0 requests, 0 model requests, 0 shown, 0 accepted, median latency n/a.",
  );
});
