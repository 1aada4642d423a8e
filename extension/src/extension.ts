/**
 * Acepilot for VS Code: starts `acepilot serve` over stdio and shows its inline
 * completions as ghost text.
 *
 * One `AcepilotClient` owns the language client, the status bar item and the
 * output channel. The server process is restarted when it dies (a crash, an
 * out-of-memory kill) unless it keeps dying; a missing Python or acepilot is
 * found before starting (see preflight.ts) and reported with the install
 * command. Settings are mapped to the server's keys in config.ts and pushed on
 * every change; the team token lives in SecretStorage only.
 *
 * Telemetry stays local: "shown" and "accepted" counts go only to the server
 * this extension started (`acepilot/telemetry`), for `acepilot/stats`; that
 * server forwards them only to a configured team server (remote backend and
 * `acepilot.telemetry`). The extension itself sends nothing anywhere.
 * An accepted completion is checked again after 30 s and 2 min (retention.ts):
 * how many of its characters are still there goes the same way, as counts only.
 */
import * as os from "node:os";
import * as path from "node:path";
import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  DidChangeTextDocumentNotification,
  ErrorAction,
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
} from "vscode-languageclient/node";
import {
  type ExtensionSettings,
  SECTION,
  type ServerSettings,
  TOKEN_SECRET,
  toLaunchSettings,
  toServerSettings,
} from "./config";
import { preflight } from "./preflight";
import { type RetentionReport, RetentionTracker } from "./retention";
import { ACCEPTED_COMMAND, RESYNC, STATS, STATUS, TELEMETRY } from "./protocol";
import { type ServerStatus, StatusModel, summarizeStats } from "./status";

/** Crashes tolerated within CRASH_WINDOW_MS before the extension stops restarting. */
const MAX_CRASHES = 5;
const CRASH_WINDOW_MS = 3 * 60_000;

interface TelemetryArgument {
  id?: unknown;
  languageId?: unknown;
}

interface PythonEnvironmentsApi {
  environments?: {
    getActiveEnvironmentPath?: (resource?: vscode.Uri) => { path?: string } | undefined;
    resolveEnvironment?: (
      env: unknown,
    ) => Promise<{ executable?: { uri?: vscode.Uri } } | undefined>;
    onDidChangeActiveEnvironmentPath?: vscode.Event<unknown>;
  };
}

class AcepilotClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private readonly status = new StatusModel();
  private readonly item: vscode.StatusBarItem;
  private readonly output: vscode.LogOutputChannel;
  private token: string | undefined;
  private stopping = false;
  private started = false; // the current client finished its first start
  private crashes: number[] = [];
  private queue: Promise<void> = Promise.resolve();
  private readonly disposables: vscode.Disposable[] = [];
  private readonly retention = new RetentionTracker((report) => {
    this.retained(report);
  });
  /** The text of the completions shown lately, by id: what an accept inserts. */
  private readonly shownText = new Map<string, string>();

  constructor(private readonly context: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel("Acepilot", { log: true });
    this.item = vscode.window.createStatusBarItem(
      "acepilot.status",
      vscode.StatusBarAlignment.Right,
      100,
    );
    this.item.name = "Acepilot";
    this.item.command = "acepilot.toggle";
    this.status.setEnabled(this.settings().enable !== false);
    this.render();
    this.item.show();
  }

  async activate(): Promise<void> {
    const { context } = this;
    this.token = await context.secrets.get(TOKEN_SECRET);
    this.disposables.push(
      vscode.commands.registerCommand("acepilot.toggle", () => this.toggle()),
      vscode.commands.registerCommand("acepilot.restart", () => this.restart()),
      vscode.commands.registerCommand("acepilot.showLogs", () => {
        this.output.show(true);
      }),
      vscode.commands.registerCommand("acepilot.setTeamToken", () => this.setToken()),
      vscode.commands.registerCommand("acepilot.showStats", () => this.showStats()),
      vscode.commands.registerCommand("acepilot.clearTeamToken", async () => {
        await context.secrets.delete(TOKEN_SECRET);
        void vscode.window.showInformationMessage("Acepilot: team token removed.");
      }),
      vscode.commands.registerCommand(ACCEPTED_COMMAND, (arg?: TelemetryArgument) => {
        this.telemetry("accepted", arg);
        this.followAccepted(arg);
      }),
      vscode.workspace.onDidChangeTextDocument((event) => {
        this.retention.changed(event.document.uri.toString(), event.contentChanges);
      }),
      vscode.workspace.onDidChangeConfiguration((event) => {
        this.configurationChanged(event);
      }),
      context.secrets.onDidChange(async (event) => {
        if (event.key === TOKEN_SECRET) {
          this.token = await context.secrets.get(TOKEN_SECRET);
          this.pushSettings();
        }
      }),
    );
    this.watchPythonExtension();
    // not awaited: activation must not wait for the model to load
    this.restart().catch((error: unknown) => {
      this.fail(`Acepilot: starting the language server failed (${String(error)}).`);
    });
  }

  // ---- lifecycle -----------------------------------------------------------------

  /** Stop the server (if any) and start a new one; calls are serialized. */
  restart(): Promise<void> {
    // a failed earlier restart must not stop this one from running
    this.queue = this.queue
      .catch(() => undefined)
      .then(async () => {
        await this.stopClient();
        await this.startClient();
      });
    return this.queue;
  }

  private async startClient(): Promise<void> {
    this.status.starting();
    this.render();
    this.crashes = [];
    const launch = toLaunchSettings(
      this.config().get("server.python"),
      this.config().get("server.args"),
    );
    const python = launch.python !== null ? expand(launch.python) : await this.defaultPython();
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? os.homedir();
    this.log(`checking ${python}`);
    const check = await preflight(python, cwd);
    if (!check.ok) {
      this.fail(check.message);
      return;
    }
    this.log(`acepilot ${check.version}: starting ${python} -m acepilot.server.cli serve`);
    const serverOptions: ServerOptions = {
      command: python,
      args: ["-m", "acepilot.server.cli", ...launch.args, "serve"],
      // no `transport`: TransportKind.stdio would append --stdio, which `acepilot serve` does not take
      options: { cwd, env: { ...process.env } },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      outputChannel: this.output,
      // A function: evaluated again on every (re)start, so a restarted server gets current settings.
      initializationOptions: () => ({ [SECTION]: this.serverSettings() }),
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        closed: () => this.closed(),
      },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          this.status.requestStarted();
          this.render();
          try {
            const result = await next(document, position, context, token);
            const items = Array.isArray(result) ? result : (result?.items ?? []);
            const first = items[0];
            if (first !== undefined) {
              const argument = first.command?.arguments?.[0] as TelemetryArgument | undefined;
              if (typeof argument?.id === "string" && typeof first.insertText === "string") {
                this.rememberShown(argument.id, first.insertText);
              }
              this.telemetry("shown", {
                id: argument?.id,
                languageId: argument?.languageId ?? document.languageId,
              });
            }
            return result;
          } finally {
            this.status.requestFinished();
            this.render();
          }
        },
        workspace: {
          configuration: async (params, token, next) => {
            const values: unknown = await next(params, token);
            if (!Array.isArray(values)) {
              return values as never;
            }
            return params.items.map((item, index) =>
              item.section === SECTION ? this.serverSettings() : (values[index] as unknown),
            );
          },
        },
      },
    };
    const client = new LanguageClient("acepilot", "Acepilot", serverOptions, clientOptions);
    client.onNotification(STATUS, (params: ServerStatus) => {
      this.status.serverStatus(params);
      this.render();
    });
    client.onNotification(RESYNC, (params: { uri?: unknown }) => {
      this.resync(client, params);
    });
    this.client = client;
    this.stopping = false;
    this.started = false;
    try {
      await client.start();
      this.started = true;
    } catch (error) {
      this.fail(`Acepilot: the language server did not start (${String(error)}). See the logs.`);
    }
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client === undefined) {
      return;
    }
    this.stopping = true;
    try {
      await client.stop(5000);
    } catch (error) {
      this.log(`stopping the server: ${String(error)}`);
    }
    this.status.stopped();
  }

  /** The connection closed: restart, unless we are stopping or it keeps crashing. */
  private closed(): { action: CloseAction; handled: boolean } {
    if (this.stopping || !this.started) {
      // stopping on purpose, or the first start failed: startClient reports that
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < CRASH_WINDOW_MS);
    this.crashes.push(now);
    if (this.crashes.length > MAX_CRASHES) {
      this.fail(
        `Acepilot: the language server stopped ${this.crashes.length} times in 3 minutes; ` +
          "not restarting. See the logs (Acepilot: Show Logs), then run Acepilot: Restart Server.",
      );
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    this.log("the language server stopped: restarting it");
    this.status.starting();
    this.render();
    return { action: CloseAction.Restart, handled: true };
  }

  private fail(message: string): void {
    this.log(message);
    this.status.failed(message);
    this.render();
    void vscode.window.showErrorMessage(message, "Open Settings", "Show Logs").then((choice) => {
      if (choice === "Open Settings") {
        void vscode.commands.executeCommand("workbench.action.openSettings", "acepilot.server");
      } else if (choice === "Show Logs") {
        this.output.show(true);
      }
    });
  }

  // ---- settings ------------------------------------------------------------------

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
  }

  private settings(): ExtensionSettings {
    const config = this.config();
    return {
      enable: config.get("enable"),
      languages: config.get("languages"),
      backend: config.get("backend"),
      model: config.get("model"),
      registry: config.get("registry"),
      remote: { url: config.get("remote.url"), model: config.get("remote.model") },
      maxTokens: config.get("maxTokens"),
      temperature: config.get("temperature"),
      debounceMs: config.get("debounceMs"),
      threads: config.get("threads"),
      telemetry: config.get("telemetry"),
      workspaceContext: config.get("workspaceContext"),
      workspaceContextTokens: config.get("workspaceContextTokens"),
      idlePrefillMs: config.get("idlePrefillMs"),
    };
  }

  private serverSettings(): ServerSettings {
    return toServerSettings(this.settings(), this.token);
  }

  private configurationChanged(event: vscode.ConfigurationChangeEvent): void {
    if (!event.affectsConfiguration(SECTION)) {
      return;
    }
    this.status.setEnabled(this.settings().enable !== false);
    this.render();
    if (event.affectsConfiguration(`${SECTION}.server`)) {
      void this.restart();
    } else {
      this.pushSettings();
    }
  }

  private pushSettings(): void {
    const client = this.client;
    if (client?.isRunning() !== true) {
      return; // a starting server reads them from initializationOptions
    }
    void client
      .sendNotification(DidChangeConfigurationNotification.type, {
        settings: { [SECTION]: this.serverSettings() },
      })
      .catch((error: unknown) => {
        this.log(`sending settings failed: ${String(error)}`);
      });
  }

  private async toggle(): Promise<void> {
    const enabled = this.settings().enable !== false;
    await this.config().update("enable", !enabled, vscode.ConfigurationTarget.Global);
  }

  private async setToken(): Promise<void> {
    const value = await vscode.window.showInputBox({
      title: "Acepilot: Set Team Token",
      prompt: "The bearer token of your team's Acepilot server (kept in VS Code's secret storage)",
      password: true,
      ignoreFocusOut: true,
    });
    if (value === undefined) {
      return;
    }
    if (value.trim() === "") {
      await this.context.secrets.delete(TOKEN_SECRET);
    } else {
      await this.context.secrets.store(TOKEN_SECRET, value.trim());
    }
    void vscode.window.showInformationMessage("Acepilot: team token saved.");
  }

  /** The server's counters (`acepilot/stats`): a one-line summary, the full JSON in the logs. */
  private async showStats(): Promise<void> {
    const client = this.client;
    if (client?.isRunning() !== true) {
      void vscode.window.showWarningMessage("Acepilot: the language server is not running.");
      return;
    }
    const stats: unknown = await client.sendRequest(STATS, {});
    this.log(`stats: ${JSON.stringify(stats)}`);
    void vscode.window.showInformationMessage(summarizeStats(stats));
  }

  // ---- Python --------------------------------------------------------------------

  /** The Python extension's selected interpreter, else python3 (python on Windows). */
  private async defaultPython(): Promise<string> {
    const fallback = process.platform === "win32" ? "python" : "python3";
    const api = await pythonApi();
    const environments = api?.environments;
    if (environments?.getActiveEnvironmentPath === undefined) {
      return fallback;
    }
    try {
      const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
      const active = environments.getActiveEnvironmentPath(resource);
      const resolved = await environments.resolveEnvironment?.(active);
      return resolved?.executable?.uri?.fsPath ?? active?.path ?? fallback;
    } catch (error) {
      this.log(`the Python extension gave no interpreter: ${String(error)}`);
      return fallback;
    }
  }

  private watchPythonExtension(): void {
    void pythonApi().then((api) => {
      const event = api?.environments?.onDidChangeActiveEnvironmentPath;
      if (event === undefined) {
        return;
      }
      this.disposables.push(
        event(() => {
          if (toLaunchSettings(this.config().get("server.python"), []).python === null) {
            void this.restart();
          }
        }),
      );
    });
  }

  // ---- protocol extras ---------------------------------------------------------------

  private telemetry(event: "shown" | "accepted", arg: TelemetryArgument | undefined): void {
    const client = this.client;
    if (client?.isRunning() !== true) {
      return;
    }
    const params = {
      event,
      id: typeof arg?.id === "string" || typeof arg?.id === "number" ? arg.id : null,
      languageId: typeof arg?.languageId === "string" ? arg.languageId : null,
    };
    void client.sendNotification(TELEMETRY, params).catch(() => undefined);
  }

  private rememberShown(id: string, text: string): void {
    this.shownText.set(id, text);
    while (this.shownText.size > 50) {
      const oldest = this.shownText.keys().next().value;
      if (oldest === undefined) break;
      this.shownText.delete(oldest);
    }
  }

  /** Follow an accepted completion's characters (it was just inserted before the cursor). */
  private followAccepted(arg: TelemetryArgument | undefined): void {
    const id = arg?.id;
    const text = typeof id === "string" ? this.shownText.get(id) : undefined;
    const editor = vscode.window.activeTextEditor;
    if (typeof id !== "string" || text === undefined || editor === undefined) {
      return;
    }
    this.shownText.delete(id);
    const document = editor.document;
    const end = document.offsetAt(editor.selection.active);
    const start = end - text.length;
    const range = new vscode.Range(document.positionAt(start), document.positionAt(end));
    if (start < 0 || document.getText(range) !== text) {
      return; // not inserted as shown (partly accepted, or changed): nothing to follow
    }
    const languageId = typeof arg?.languageId === "string" ? arg.languageId : document.languageId;
    this.retention.track(id, languageId, document.uri.toString(), start, text.length);
  }

  /** A retention checkpoint: counts only, to the server (which knows the completion's size). */
  private retained(report: RetentionReport): void {
    const client = this.client;
    if (client?.isRunning() !== true) {
      return;
    }
    const params = {
      event: "retained",
      id: report.id,
      languageId: report.languageId,
      afterS: report.afterS,
      retainedChars: report.retainedChars,
    };
    void client.sendNotification(TELEMETRY, params).catch(() => undefined);
  }

  /** The server lost track of a document: send its full text at the current version. */
  private resync(client: LanguageClient, params: { uri?: unknown }): void {
    if (typeof params.uri !== "string") {
      return;
    }
    const converter = client.code2ProtocolConverter;
    const document = vscode.workspace.textDocuments.find(
      (doc) => converter.asUri(doc.uri) === params.uri,
    );
    if (document === undefined) {
      return;
    }
    this.log(`resync of a document requested (version ${document.version})`);
    void client
      .sendNotification(DidChangeTextDocumentNotification.type, {
        textDocument: { uri: converter.asUri(document.uri), version: document.version },
        contentChanges: [{ text: document.getText() }],
      })
      .catch((error: unknown) => {
        this.log(`resync failed: ${String(error)}`);
      });
  }

  // ---- view --------------------------------------------------------------------------

  private render(): void {
    const view = this.status.view();
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.accessibilityInformation = { label: view.label };
    this.item.backgroundColor =
      view.state === "error" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  private log(message: string): void {
    this.output.info(message);
  }

  async dispose(): Promise<void> {
    this.retention.dispose();
    await this.queue.catch(() => undefined);
    await this.stopClient();
    for (const disposable of this.disposables) {
      disposable.dispose();
    }
    this.item.dispose();
    this.output.dispose();
  }
}

async function pythonApi(): Promise<PythonEnvironmentsApi | undefined> {
  const extension = vscode.extensions.getExtension<PythonEnvironmentsApi>("ms-python.python");
  if (extension === undefined) {
    return undefined;
  }
  try {
    return extension.isActive ? extension.exports : await extension.activate();
  } catch {
    return undefined;
  }
}

/** `~` and `${workspaceFolder}` in the configured interpreter path. */
function expand(value: string): string {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? "";
  let out = value.replace(/\$\{workspaceFolder\}/g, folder);
  if (out === "~" || out.startsWith("~/")) {
    out = path.join(os.homedir(), out.slice(1));
  }
  return out;
}

let instance: AcepilotClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  instance = new AcepilotClient(context);
  await instance.activate();
}

export async function deactivate(): Promise<void> {
  const current = instance;
  instance = undefined;
  await current?.dispose();
}
