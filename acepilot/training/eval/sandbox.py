"""Running untrusted generated code: a private filesystem view per sample, limits, no network.

Each sample (its build and its run) happens in one bubblewrap sandbox
(`bwrap`, the tool Flatpak uses), started fresh for the sample:

- its own mount namespace with nothing of the host but the toolchains,
  read-only: /usr (with the merged-/usr symlinks), a few files of /etc the
  toolchains read (alternatives, the JDK's configuration, the loader cache), a
  toolchain installed elsewhere (rustup's sysroot, the Rust crates HumanEval-X
  needs) at its own path; no home directory, no /var, /run or host /tmp, so
  no Unix socket and no world-writable directory of the host is reachable;
- the sample's directory `/work` and `/tmp` are tmpfs mounts of bounded size
  (`--size`, bubblewrap >= 0.7: Debian 12 has 0.8.0): writing past them fails
  with ENOSPC; the root directory is read-only;
- its own PID, IPC, UTS and network namespaces (only a downed loopback: no
  network at all); the sandbox dies with the harness (`--die-with-parent`);
- inside, `supervisor.py` (see its docstring) writes the files, runs the
  steps through `jail.py` (rlimits, no_new_privs, and as root a per-worker
  unprivileged uid: the compilers run as a separate builder uid, the program
  as the worker's uid), kills every leftover process after each step, and
  checks the completion channel.

Compilation happens inside the same sandbox, so a compiler cannot read the
host either (`include_str!("/home/...")` fails to compile). Go's build cache is
the only host directory mounted read-write, and only the builder uid can open
it (0700): the program, running as another uid, cannot poison later samples.

Without bubblewrap the harness refuses to run (SandboxError, with the
apt-get line) unless the caller opts out explicitly
(`--unsafe-no-filesystem-sandbox`): the supervisor then runs on the host, in
a fresh directory, with the same limits, uids and network namespace but the
host's filesystem visible (as before bubblewrap; docs/evaluation.md).
After each sample, cleanup.py ends what is left of its uid's processes and
deletes its directory tree.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from acepilot.server.errors import AcepilotError
from acepilot.training.eval.cleanup import kill_group, kill_user, remove_tree, user_task_count

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
JAIL = HERE / "jail.py"
SUPERVISOR = HERE / "supervisor.py"
JAIL_FAILED = 125
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Sandbox users when the harness runs as root: one per worker slot, so one
# sample's fork bomb cannot use up another's process budget. Each uid is leased
# with an flock in UID_LOCKS, so two harnesses on one machine (a gate evaluating
# two models, CI) never share a uid, and never kill each other's processes.
# Compilers run as BUILDER_UID, which alone can open Go's shared build cache.
UID_BASE = int(os.environ.get("ACEPILOT_SANDBOX_UID_BASE", "61000"))
UID_RANGE = 1000
BUILDER_UID = UID_BASE - 1
UID_LOCKS = Path(tempfile.gettempdir()) / "acepilot-sandbox-uids"
BWRAP_INSTALL = "apt-get install -y bubblewrap"
OPT_OUT_FLAG = "--unsafe-no-filesystem-sandbox"
# What the supervisor (root in the sandbox, as root) keeps: switch to the sandbox
# uids, give them the work directory and the channel's pipes, read what the
# builder wrote, kill leftovers. The program itself, another uid, has none.
SUPERVISOR_CAPS = (
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_DAC_OVERRIDE",
    "CAP_KILL",
)
# Inside the sandbox.
WORK = "/work"
PRIVATE = "/out"
TOOLS = "/acepilot"
# Files of /etc the toolchains read; nothing else of /etc (no passwd, no hosts).
ETC = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl/openssl.cnf",
)
ETC_GLOBS = ("java-*",)


@dataclass(frozen=True)
class Limits:
    """Per-step limits. `cpu_s` is CPU time (all threads), `wall_s` elapsed time."""

    cpu_s: int = 10
    wall_s: float = 15.0
    address_space: int = 4 << 30
    file_size: int = 16 << 20
    nproc: int = 128
    nofile: int = 256
    output_bytes: int = 4096


@dataclass(frozen=True)
class Disk:
    """tmpfs sizes of one sample's writable places (bubblewrap mode)."""

    work: int = 256 << 20
    tmp: int = 64 << 20
    private: int = 32 << 20


@dataclass(frozen=True)
class Isolation:
    """What the sandbox does on this machine (probed once)."""

    filesystem: str  # "bubblewrap" or "host (unsafe opt-out)"
    drop_privileges: bool  # root: code runs as an unprivileged per-slot uid

    def describe(self) -> str:
        fs = (
            "bubblewrap: private filesystem view (toolchains read-only, tmpfs work dir), "
            "own PID and network namespaces"
            if self.filesystem == "bubblewrap"
            else "NO filesystem sandbox (explicit opt-out): host filesystem visible; "
            "network namespace only"
        )
        who = (
            "code runs as an unprivileged per-slot uid, compilers as a builder uid"
            if self.drop_privileges
            else "code runs as the current user"
        )
        return f"{fs}; {who}; completion channel with a per-sample secret"


@dataclass(frozen=True)
class Step:
    """One command of a sample. `user`: "build" (compilers) or "run" (the program).
    `channel`: the completion channel (fds 3 and 4) is given to this step."""

    name: str
    argv: Sequence[str]
    limits: Limits
    user: str = "run"
    env: Mapping[str, str] = field(default_factory=dict)
    channel: bool = False


@dataclass(frozen=True)
class CppGuard:
    """The C++ macro guard (supervisor.cpp_guard): between two build steps."""

    base: str
    cand: str
    head: str
    tail: str
    out: str
    names: Sequence[str]
    name: str = "macro-guard"


@dataclass(frozen=True)
class ExecResult:
    """How one step ended. `returncode` is negative for a signal (e.g. -9).
    `reported`: the harness's code wrote back this step's secret (channel steps)."""

    name: str
    returncode: int
    timed_out: bool
    output: str
    duration_s: float
    reported: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class SandboxError(AcepilotError):
    """The sandbox cannot run here (or failed itself): the run must not go on."""


class SampleError(AcepilotError):
    """One sample could not be executed (not the code's fault): that sample errors."""


def system_python() -> str:
    """The interpreter that runs the supervisor and jail: the system's python3."""
    found = shutil.which("python3", path=SYSTEM_PATH)
    return found or sys.executable


def find_bwrap() -> str | None:
    """bwrap from the system directories; $ACEPILOT_BWRAP names another (a path that
    does not exist: as if it were not installed)."""
    chosen = os.environ.get("ACEPILOT_BWRAP")
    if chosen is not None:
        return chosen if os.access(chosen, os.X_OK) else None
    return shutil.which("bwrap", path=SYSTEM_PATH) or shutil.which("bwrap")


@lru_cache(maxsize=2)
def probe_isolation(allow_unsandboxed: bool = False) -> Isolation:
    """bubblewrap, or the explicit opt-out; anything else is refused."""
    root = os.geteuid() == 0
    if find_bwrap() is not None:
        return Isolation("bubblewrap", drop_privileges=root)
    if not allow_unsandboxed:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed: generated code must run in a private "
            f"filesystem view. Install it: `sudo {BWRAP_INSTALL}` (or run "
            "scripts/install-system-deps.sh). To run without it anyway (the code then sees "
            f"the host's files; never for untrusted models) pass {OPT_OUT_FLAG}."
        )
    log.warning(
        "running generated code WITHOUT a filesystem sandbox (%s): it can read every "
        "file this user can, and write to world-writable directories",
        OPT_OUT_FLAG,
    )
    return Isolation("host (unsafe opt-out)", drop_privileges=root)


def etc_binds() -> list[str]:
    found = [p for p in ETC if os.path.exists(p)]
    for pattern in ETC_GLOBS:
        found += sorted(str(p) for p in Path("/etc").glob(pattern))
    return found


class Sandbox:
    """Runs samples (files + steps) in bubblewrap, or on the host when opted out."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        allow_unsandboxed: bool = False,
        disk: Disk | None = None,
    ) -> None:
        self.isolation = probe_isolation(allow_unsandboxed)
        self.disk = disk or Disk()
        self.python = system_python()
        self.bwrap = find_bwrap() if self.isolation.filesystem == "bubblewrap" else None
        base = Path(root) if root is not None else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="acepilot-sandbox-", dir=base))
        # Host mode as root: the sandbox users must reach their sample directory (x, not r).
        os.chmod(self.root, 0o711 if self.isolation.drop_privileges else 0o700)
        self._leases: dict[int, IO[str]] = {}
        self._slots: dict[int, int] = {}
        self._lease_lock = threading.Lock()
        self._etc = etc_binds()

    def close(self) -> None:
        for uid, handle in self._leases.items():
            kill_user(uid)
            handle.close()  # releases the flock
        self._leases.clear()
        self._slots.clear()
        remove_tree(self.root)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def uid(self, slot: int) -> int | None:
        """The sandbox uid of a worker slot (root), leased on first use."""
        if not self.isolation.drop_privileges:
            return None
        with self._lease_lock:
            if slot not in self._slots:
                self._slots[slot] = self._lease()
            return self._slots[slot]

    def _lease(self) -> int:
        UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
        for uid in range(UID_BASE, UID_BASE + UID_RANGE):
            if uid in self._leases:
                continue
            handle = (UID_LOCKS / f"{uid}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            kill_user(uid)  # a crashed harness may have left processes behind
            self._leases[uid] = handle
            return uid
        raise SandboxError(f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_RANGE - 1}")

    def builder_dir(self, path: Path) -> Path:
        """A host directory that persists between samples (Go's build cache), owned by
        the builder uid and closed to everyone else (root mode)."""
        path.mkdir(parents=True, exist_ok=True)
        if self.isolation.drop_privileges:
            os.chown(path, BUILDER_UID, BUILDER_UID)
        os.chmod(path, 0o700)
        return path

    def run_sample(
        self,
        files: Mapping[str, str],
        steps: Sequence[Step | CppGuard],
        *,
        slot: int = 0,
        path: str = SYSTEM_PATH,
        read_only: Sequence[str] = (),
        read_write: Mapping[str, str] | None = None,
    ) -> list[ExecResult]:
        """Write `files` into a fresh work directory and run `steps` in order (stopping
        at the first that fails). `read_only`: host paths the toolchain needs, mounted
        at the same place; `read_write`: {host path: sandbox path} (bubblewrap mode).
        Raises SampleError when the sandbox could not run the sample."""
        run_uid = self.uid(slot)
        uids = {"run": run_uid, "build": BUILDER_UID if run_uid is not None else None}
        outer = Path(tempfile.mkdtemp(prefix="s-", dir=self.root))
        try:
            if self.bwrap is not None:
                work, private, tmp = WORK, PRIVATE, "/tmp"
                python, jail, supervisor = self.python, f"{TOOLS}/jail.py", f"{TOOLS}/sup.py"
            else:
                os.chmod(outer, 0o711 if run_uid is not None else 0o700)
                (outer / "work").mkdir()
                work, private, tmp = str(outer / "work"), str(outer / "out"), str(outer / "work")
                python, jail, supervisor = self.python, str(JAIL), str(SUPERVISOR)
            spec = {
                "work": work,
                "private": private,
                "files": dict(files),
                "pidns": self.bwrap is not None,
                "uids": uids,
                "python": python,
                "jail": jail,
                "net": "none" if self.bwrap is not None else "namespace",
                "env": {
                    "PATH": path,
                    "HOME": work,
                    "TMPDIR": tmp,
                    "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONNOUSERSITE": "1",
                },
                "steps": [self._step(step, run_uid) for step in steps],
                "output_bytes": max(
                    (s.limits.output_bytes for s in steps if isinstance(s, Step)), default=4096
                ),
            }
            wall = sum(s.limits.wall_s for s in steps if isinstance(s, Step)) + 30.0
            if self.bwrap is not None:
                command = [
                    *self._bwrap_args(read_only, read_write or {}),
                    python,
                    "-I",
                    "-S",
                    supervisor,
                ]
            else:
                command = [python, "-I", "-S", supervisor]
            return self._supervise(command, spec, wall, outer)
        finally:
            if run_uid is not None:
                kill_user(run_uid)
            remove_tree(outer)

    def _step(self, step: Step | CppGuard, run_uid: int | None) -> dict[str, Any]:
        if isinstance(step, CppGuard):
            return {
                "kind": "cpp_guard",
                "name": step.name,
                "base": step.base,
                "cand": step.cand,
                "head": step.head,
                "tail": step.tail,
                "out": step.out,
                "names": list(step.names),
            }
        limits = step.limits
        # One uid for everything (not root): a margin above what this user runs now.
        nproc = limits.nproc if run_uid is not None else user_task_count(os.getuid()) + limits.nproc
        return {
            "kind": "exec",
            "name": step.name,
            "argv": list(step.argv),
            "as": step.user,
            "cpu": limits.cpu_s,
            "wall": limits.wall_s,
            "as_bytes": limits.address_space,
            "fsize": limits.file_size,
            "nofile": limits.nofile,
            "nproc": nproc,
            "env": dict(step.env),
            "channel": step.channel,
        }

    def _bwrap_args(self, read_only: Sequence[str], read_write: Mapping[str, str]) -> list[str]:
        assert self.bwrap is not None
        args = [
            self.bwrap,
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
        ]  # fmt: skip
        binds = [p for p in [*self._etc, *read_only] if not p.startswith("/usr/")]
        binds = [p for p in dict.fromkeys(binds) if os.path.exists(p)]
        # bubblewrap creates missing parents 0700: the sandbox uids could not pass.
        parents = {str(a) for p in binds for a in Path(p).parents if str(a) != "/"}
        for parent in sorted(parents, key=lambda p: p.count("/")):
            args += ["--perms", "0755", "--dir", parent]
        for path in binds:
            args += ["--ro-bind", path, path]
        args += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(self.disk.tmp), "--perms", "1777", "--tmpfs", "/tmp",
            "--size", str(self.disk.work), "--tmpfs", WORK,
            "--size", str(self.disk.private), "--tmpfs", PRIVATE,
            "--ro-bind", str(SUPERVISOR), f"{TOOLS}/sup.py",
            "--ro-bind", str(JAIL), f"{TOOLS}/jail.py",
        ]  # fmt: skip
        for host, inside in read_write.items():
            args += ["--bind", host, inside]
        args += [
            "--remount-ro", "/",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
            "--hostname", "sandbox",
            "--chdir", WORK,
        ]  # fmt: skip
        if os.geteuid() != 0:
            args.append("--unshare-user")
        else:  # the supervisor keeps only what it needs to hand out uids and clean up
            args += ["--cap-drop", "ALL"]
            for cap in SUPERVISOR_CAPS:
                args += ["--cap-add", cap]
        return [*args, "--"]

    def _supervise(
        self, command: list[str], spec: dict[str, Any], wall: float, outer: Path
    ) -> list[ExecResult]:
        stderr_path = outer / "supervisor.err"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
                cwd=outer,
            )
            try:
                out, _ = process.communicate(json.dumps(spec).encode(), timeout=wall)
            except subprocess.TimeoutExpired:
                kill_group(process.pid)
                process.communicate()
                raise SampleError(f"the sandbox did not finish within {wall:.0f} s") from None
            finally:
                kill_group(process.pid)
        try:
            result = json.loads(out.decode("utf-8", "replace"))
        except json.JSONDecodeError:
            message = stderr_path.read_bytes()[:2000].decode("utf-8", "replace").strip()
            raise SampleError(
                f"the sandbox failed (exit {process.returncode}): {message or 'no output'}"
            ) from None
        if "error" in result:
            raise SampleError(f"the sandbox's supervisor failed: {result['error']}")
        steps = [ExecResult(**step) for step in result["steps"]]
        for step in steps:
            if step.returncode == JAIL_FAILED and step.output.startswith("sandbox: "):
                raise SampleError(step.output.strip())
        return steps

    def self_test(self) -> None:
        """One trivial sample through the whole path: a sandbox that cannot start is a
        SandboxError before any sample is scored (never a run of zeros)."""
        try:
            steps = self.run_sample(
                {"probe.txt": "ok\n"},
                [Step("probe", ["cat", "probe.txt"], Limits(cpu_s=10, wall_s=30.0))],
            )
        except SampleError as exc:
            raise SandboxError(f"the sandbox does not work on this machine: {exc}") from None
        if not steps or not steps[-1].ok or steps[-1].output.strip() != "ok":
            got = steps[-1].output.strip() if steps else "nothing"
            raise SandboxError(f"the sandbox does not work on this machine: {got}")
