/**
 * Before starting `acepilot serve`: is there a Python, and does it have acepilot?
 *
 * The language client alone would only see a process that exits at once and
 * retry a few times; the user would get a generic "server crashed" message.
 * Running a one-line import first turns the two common setup mistakes into
 * messages that say what to install and where. No `vscode` import: the unit
 * tests run it against real interpreters.
 */
import { execFile } from "node:child_process";

/** Prints acepilot's version; fails with ModuleNotFoundError when acepilot is absent. */
export const CHECK_SCRIPT =
  "import importlib.metadata as m, acepilot.server.cli; print(m.version('acepilot'))";

export const INSTALL_HINT = "pip install acepilot";
export const INSTALL_FROM_CHECKOUT = "pip install -e .";

export type Preflight =
  | { ok: true; version: string }
  | { ok: false; kind: "python-missing" | "acepilot-missing" | "failed"; message: string };

/** `python -c CHECK_SCRIPT`, run from `cwd` (not the repository: `server` must come from site-packages). */
export function preflight(python: string, cwd: string, timeoutMs = 60_000): Promise<Preflight> {
  return new Promise((resolve) => {
    execFile(
      python,
      ["-c", CHECK_SCRIPT],
      { cwd, timeout: timeoutMs, windowsHide: true, encoding: "utf8" },
      (error, stdout, stderr) => {
        resolve(interpret(python, error, stdout, stderr));
      },
    );
  });
}

interface ExecError {
  code?: unknown;
  killed?: boolean;
  signal?: unknown;
}

/** The outcome of the check, with the message the user sees (pure: unit-tested). */
export function interpret(
  python: string,
  error: ExecError | null,
  stdout: string,
  stderr: string,
): Preflight {
  if (error === null) {
    return { ok: true, version: stdout.trim() };
  }
  if (error.code === "ENOENT" || error.code === "EACCES") {
    return {
      ok: false,
      kind: "python-missing",
      message:
        `Acepilot: cannot run the Python interpreter "${python}" (${error.code}). ` +
        `Install Python 3.11+ and acepilot (${INSTALL_HINT}), or set "acepilot.server.python" ` +
        "to an interpreter that has it.",
    };
  }
  if (/ModuleNotFoundError|PackageNotFoundError|No module named/.test(stderr)) {
    return {
      ok: false,
      kind: "acepilot-missing",
      message:
        `Acepilot: the Python "${python}" does not have acepilot installed. ` +
        `Run: ${quote(python)} -m ${INSTALL_HINT} (from a checkout of the repository: ` +
        `${quote(python)} -m ${INSTALL_FROM_CHECKOUT}), or set "acepilot.server.python".`,
    };
  }
  const last = stderr.trim().split(/\r?\n/).pop() ?? "";
  const why = error.killed === true ? "timed out" : last || `exit ${String(error.code ?? error.signal)}`;
  return {
    ok: false,
    kind: "failed",
    message: `Acepilot: checking the Python "${python}" failed (${why}).`,
  };
}

function quote(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `"${path}"`;
}
