/**
 * The status bar's state machine, pure (no `vscode` import) for unit tests.
 *
 * Inputs: the extension's own events (server starting, stopped, crashed, a
 * completion request in flight) and the server's `acepilot/status`
 * notifications (`{state: loading|ready|error, backend, model, device,
 * message, latency: {totalMs, ...}}`, docs/lsp.md). Output: one of the five
 * states the user sees, with a text, an accessible label and a tooltip.
 *
 * Precedence: error > disabled > starting > generating > ready. A missing
 * Python or acepilot is an error even when completions are toggled off: the
 * user must learn why nothing works.
 */

export type State = "starting" | "ready" | "generating" | "error" | "disabled";

/** The server's `acepilot/status` notification. */
export interface ServerStatus {
  state?: unknown;
  backend?: unknown;
  model?: unknown;
  device?: unknown;
  message?: unknown;
  latency?: { totalMs?: unknown } | null;
}

export interface View {
  state: State;
  text: string;
  label: string;
  tooltip: string;
}

type ServerPhase = "starting" | "loading" | "ready" | "error" | "stopped";

const ICONS: Record<State, string> = {
  starting: "$(loading~spin)",
  ready: "$(sparkle)",
  generating: "$(sync~spin)",
  error: "$(error)",
  disabled: "$(circle-slash)",
};

function str(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

export class StatusModel {
  private phase: ServerPhase = "stopped";
  private enabled = true;
  private inFlight = 0;
  private error: string | null = null;
  private model: string | null = null;
  private device: string | null = null;
  private backend: string | null = null;
  private latencyMs: number | null = null;

  /** A server process is being started (first start or restart). */
  starting(): void {
    this.phase = "starting";
    this.error = null;
    this.inFlight = 0;
  }

  /** The extension could not start the server (no Python, no acepilot) or gave up restarting. */
  failed(message: string): void {
    this.phase = "error";
    this.error = message;
    this.inFlight = 0;
  }

  /** The server was stopped on purpose (deactivation). */
  stopped(): void {
    this.phase = "stopped";
    this.inFlight = 0;
  }

  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
  }

  /** An `acepilot/status` notification from the server. */
  serverStatus(status: ServerStatus): void {
    const state = str(status.state);
    this.backend = str(status.backend) ?? this.backend;
    this.model = str(status.model) ?? this.model;
    this.device = str(status.device) ?? (state === "ready" ? null : this.device);
    const total = status.latency?.totalMs;
    if (typeof total === "number" && Number.isFinite(total) && total > 0) {
      this.latencyMs = total;
    }
    if (state === "loading") {
      this.phase = "loading";
      this.error = null;
    } else if (state === "ready") {
      this.phase = "ready";
      this.error = null;
    } else if (state === "error") {
      this.phase = "error";
      this.error = str(status.message) ?? "the server reported an error";
    }
  }

  requestStarted(): void {
    this.inFlight += 1;
  }

  requestFinished(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
  }

  get state(): State {
    if (this.phase === "error") {
      return "error";
    }
    if (!this.enabled) {
      return "disabled";
    }
    if (this.phase !== "ready") {
      return "starting";
    }
    return this.inFlight > 0 ? "generating" : "ready";
  }

  view(): View {
    const state = this.state;
    const latency = this.latencyMs === null ? null : `${Math.round(this.latencyMs)} ms`;
    const suffix = state === "ready" && latency !== null ? ` ${latency}` : "";
    const lines = [`Acepilot: ${state}`];
    if (this.error !== null && state === "error") {
      lines.push(this.error);
    }
    if (this.model !== null) {
      lines.push(`Model: ${this.model}`);
    }
    if (this.backend !== null) {
      lines.push(`Backend: ${this.backend}`);
    }
    if (this.device !== null) {
      lines.push(`Device: ${this.device}`);
    }
    if (latency !== null) {
      lines.push(`Last completion: ${latency}`);
    }
    lines.push(state === "disabled" ? "Click to enable completions" : "Click to disable completions");
    return {
      state,
      text: `${ICONS[state]} Acepilot${suffix}`,
      label: `Acepilot ${state}`,
      tooltip: lines.join("\n"),
    };
  }
}

function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

/**
 * One line for the `acepilot/stats` answer (server/lsp/stats.py `snapshot`):
 * requests, model requests, completions shown and accepted, median latency.
 */
export function summarizeStats(stats: unknown): string {
  const s = (stats ?? {}) as Record<string, unknown>;
  const completions = (s.completions ?? {}) as Record<string, unknown>;
  const latency = (s.latency ?? {}) as Record<string, unknown>;
  const p50 = typeof latency.p50_ms === "number" ? `${Math.round(latency.p50_ms)} ms` : "n/a";
  return (
    `Acepilot statistics: ${count(s.requests)} requests, ${count(s.model_requests)} model requests, ` +
    `${count(completions.shown)} shown, ${count(completions.accepted)} accepted, median latency ${p50}.`
  );
}
