/**
 * Mapping of VS Code settings (`acepilot.*`, see package.json) to the language
 * server's settings (camelCase keys of server/lsp/config.py).
 *
 * Pure (no `vscode` import) so that it is unit-tested with `node --test`.
 * Every key the server knows is always sent, with `null` for "use the
 * server's default": the server overlays each update on its current
 * configuration, so a setting the user clears must be sent as null to reset.
 * Empty strings become null too (the server refuses them). The team token
 * comes from SecretStorage, never from settings.
 */

/** The settings as VS Code's `workspace.getConfiguration("acepilot")` returns them. */
export interface ExtensionSettings {
  enable?: unknown;
  languages?: unknown;
  backend?: unknown;
  model?: unknown;
  registry?: unknown;
  remote?: { url?: unknown; model?: unknown } | null;
  maxTokens?: unknown;
  temperature?: unknown;
  debounceMs?: unknown;
  threads?: unknown;
  telemetry?: unknown;
  workspaceContext?: unknown;
  workspaceContextTokens?: unknown;
  idlePrefillMs?: unknown;
}

/** What the server reads (server/lsp/config.py CHECKS). */
export interface ServerSettings {
  enable: boolean;
  languages: Record<string, boolean> | null;
  backend: string | null;
  model: string | null;
  registry: string | null;
  remoteUrl: string | null;
  remoteModel: string | null;
  remoteToken: string | null;
  maxNewTokens: number | null;
  temperature: number | null;
  debounceMs: number | null;
  threads: number | null;
  telemetry: boolean;
  workspaceContext: boolean;
  workspaceContextTokens: number | null;
  idlePrefillMs: number | null;
}

/** The configuration section, and the SecretStorage key of the team token. */
export { SECTION } from "./protocol";
export const TOKEN_SECRET = "acepilot.teamToken";

function text(value: unknown): string | null {
  if (typeof value !== "string") {
    return null;
  }
  const trimmed = value.trim();
  return trimmed === "" ? null : trimmed;
}

function finite(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function languages(value: unknown): Record<string, boolean> | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return null;
  }
  const out: Record<string, boolean> = {};
  for (const [key, enabled] of Object.entries(value as Record<string, unknown>)) {
    if (typeof enabled === "boolean") {
      out[key] = enabled;
    }
  }
  return out;
}

/**
 * The server settings for these VS Code settings and team token.
 *
 * Values of the wrong type (a hand-edited settings.json) are sent as null,
 * i.e. the server default, rather than forwarded: the server would refuse
 * the whole update, and one bad value should not freeze the others.
 */
export function toServerSettings(raw: ExtensionSettings, token: string | undefined): ServerSettings {
  const remote = raw.remote !== null && typeof raw.remote === "object" ? raw.remote : {};
  const backend = text(raw.backend);
  return {
    enable: raw.enable !== false,
    languages: languages(raw.languages),
    backend: backend === "local" || backend === "remote" ? backend : null,
    model: text(raw.model),
    registry: text(raw.registry),
    remoteUrl: text(remote.url),
    remoteModel: text(remote.model),
    remoteToken: text(token),
    maxNewTokens: finite(raw.maxTokens),
    temperature: finite(raw.temperature),
    debounceMs: finite(raw.debounceMs),
    threads: finite(raw.threads),
    telemetry: raw.telemetry !== false,
    workspaceContext: raw.workspaceContext !== false,
    workspaceContextTokens: finite(raw.workspaceContextTokens),
    idlePrefillMs: finite(raw.idlePrefillMs),
  };
}

/** Settings whose change needs a new server process rather than a settings push. */
export interface LaunchSettings {
  python: string | null;
  args: string[];
}

export function toLaunchSettings(python: unknown, args: unknown): LaunchSettings {
  return {
    python: text(python),
    args: Array.isArray(args) ? args.filter((a): a is string => typeof a === "string") : [],
  };
}
