"""Running untrusted generated code: one fresh directory, limits, no network, then nothing left.

Every execution goes through `acepilot/training/eval/jail.py` (started with the
system Python, `-I -S`), which applies the limits and the isolation between
fork and exec; see its docstring. Around it, this module:

- gives each sample a fresh directory under a private root (0700 when not
  root; 0711 when root, with the sample directory owned by the sandbox user)
  and removes it afterwards;
- starts the jail in its own session (process group) and kills the whole
  group with SIGKILL when the wall-clock timeout passes, and again when the
  command ended (children it left behind); as root, every process of the
  slot's sandbox user is killed too, which also catches code that left the
  group with setsid();
- sends stdout and stderr to a harness-owned file whose size the file-size
  limit bounds, and keeps only its first `output_bytes`;
- passes a scrubbed environment (PATH, HOME = the sample directory, TMPDIR,
  a UTF-8 locale and what the language's toolchain needs; nothing inherited).

Isolation is probed once (`probe_isolation`): a network namespace where the
kernel allows one (root, or unprivileged user namespaces), else network is
refused through the environment only (proxy variables pointing at a closed
port, and for Python a sitecustomize that disables sockets) — a documented,
weaker fallback. As root the code runs as a per-slot unprivileged uid (so
RLIMIT_NPROC bounds fork bombs and it cannot write into the harness's
directories); otherwise it runs as the harness's own user and RLIMIT_NPROC is
set a margin above that user's current task count.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

from acepilot.server.errors import AcepilotError

log = logging.getLogger(__name__)

JAIL = Path(__file__).with_name("jail.py")
JAIL_FAILED = 125
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Sandbox users when the harness runs as root: one per worker slot, so one
# sample's fork bomb cannot use up another's process budget. Each uid is leased
# with an flock in UID_LOCKS, so two harnesses on one machine (a gate evaluating
# two models, CI) never share a uid, and never kill each other's processes.
UID_BASE = int(os.environ.get("ACEPILOT_SANDBOX_UID_BASE", "61000"))
UID_RANGE = 1000
UID_LOCKS = Path(tempfile.gettempdir()) / "acepilot-sandbox-uids"
DEAD_PROXY = "http://127.0.0.1:9"
NETBLOCK_SITE = '''\
"""Installed by the acepilot sandbox when no network namespace is available."""
import socket


def _refuse(*args, **kwargs):
    raise OSError(101, "network access is disabled in the acepilot sandbox")


class _NoSocket(socket.socket):
    def connect(self, *args, **kwargs):
        _refuse()

    def connect_ex(self, *args, **kwargs):
        _refuse()

    def bind(self, *args, **kwargs):
        _refuse()


socket.socket = _NoSocket
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
'''


@dataclass(frozen=True)
class Limits:
    """Per-command limits. `cpu_s` is CPU time (all threads), `wall_s` elapsed time."""

    cpu_s: int = 10
    wall_s: float = 15.0
    address_space: int = 4 << 30
    file_size: int = 16 << 20
    nproc: int = 128
    nofile: int = 256
    output_bytes: int = 4096


@dataclass(frozen=True)
class Isolation:
    """What the sandbox can do on this machine (probed once)."""

    network: str  # "namespace" or "environment"
    drop_privileges: bool  # root: code runs as an unprivileged per-slot uid

    def describe(self) -> str:
        net = (
            "network namespace (no network at all)"
            if self.network == "namespace"
            else "NO network namespace: network refused by environment only (weaker)"
        )
        who = (
            "unprivileged per-slot uid"
            if self.drop_privileges
            else "the current user (RLIMIT_NPROC relative to its task count)"
        )
        return f"{net}; code runs as {who}"


@dataclass(frozen=True)
class ExecResult:
    """How one command ended. `returncode` is negative for a signal (e.g. -9)."""

    returncode: int
    timed_out: bool
    output: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class SandboxError(AcepilotError):
    """The sandbox itself failed (not the code in it): the run must not go on."""


def system_python() -> str:
    """The interpreter that runs the jail: the system's python3, not this venv's."""
    found = shutil.which("python3", path=SYSTEM_PATH)
    return found or sys.executable


@lru_cache(maxsize=1)
def probe_isolation() -> Isolation:
    """Try a network namespace once; root drops privileges to sandbox uids."""
    spec = {"net": "namespace", "cwd": "/", "env": {"PATH": SYSTEM_PATH}}
    done = subprocess.run(
        [system_python(), "-I", "-S", str(JAIL), json.dumps(spec), "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    network = "namespace" if done.returncode == 0 else "environment"
    if network == "environment":
        log.warning(
            "no network namespace available (%s): generated code is kept off the network "
            "by environment variables only; see docs/evaluation.md",
            done.stderr.strip() or f"exit {done.returncode}",
        )
    return Isolation(network=network, drop_privileges=os.geteuid() == 0)


def user_task_count(uid: int) -> int:
    """Tasks (threads) of `uid`: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count


def processes_of(uid: int) -> list[int]:
    """Live processes of `uid` (zombies are dead already: they wait to be reaped)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    state = handle.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


def kill_user(uid: int, rounds: int = 200) -> None:
    """SIGKILL every process of a sandbox uid, repeatedly, until none is left."""
    for _ in range(rounds):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    log.warning("sandbox uid %d still has processes after %d kill rounds", uid, rounds)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def remove_tree(path: Path) -> None:
    """rmtree that first makes directories writable (code may chmod 000 its files)."""

    def fix(func: object, name: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            os.chmod(name, stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                shutil.rmtree(name, ignore_errors=True)
            else:
                os.unlink(name)

    shutil.rmtree(path, onerror=fix)


@dataclass
class Workspace:
    """One sample's fresh directory (`work`) and where its output goes (`logs`)."""

    work: Path
    logs: Path
    slot: int


class Sandbox:
    """Runs commands under the limits of `Limits` with the isolation of `probe_isolation`."""

    def __init__(self, root: Path | None = None, isolation: Isolation | None = None) -> None:
        self.isolation = isolation or probe_isolation()
        self.python = system_python()
        base = Path(root) if root is not None else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="acepilot-sandbox-", dir=base))
        # Root mode: the sandbox users must reach their sample directory (x, not r).
        os.chmod(self.root, 0o711 if self.isolation.drop_privileges else 0o700)
        self._leases: dict[int, IO[str]] = {}
        self._slots: dict[int, int] = {}
        self._lease_lock = threading.Lock()
        self.netblock: Path | None = None
        if self.isolation.network != "namespace":
            self.netblock = self.root / "netblock"
            self.netblock.mkdir()
            (self.netblock / "sitecustomize.py").write_text(NETBLOCK_SITE)
            os.chmod(self.netblock, 0o755)
            os.chmod(self.netblock / "sitecustomize.py", 0o644)

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
        """The sandbox uid of a worker slot (root mode), leased on first use."""
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

    @contextlib.contextmanager
    def workspace(self, slot: int = 0) -> Iterator[Workspace]:
        """A fresh sample directory; removed, with every process left behind, afterwards."""
        outer = Path(tempfile.mkdtemp(prefix="s-", dir=self.root))
        os.chmod(outer, 0o711 if self.isolation.drop_privileges else 0o700)
        work = outer / "work"
        logs = outer / "logs"
        work.mkdir()
        logs.mkdir(mode=0o700)
        try:
            yield Workspace(work, logs, slot)
        finally:
            uid = self.uid(slot)
            if uid is not None:
                kill_user(uid)
            remove_tree(outer)

    def hand_over(self, space: Workspace) -> None:
        """Give the sample directory to the slot's sandbox user (root mode), e.g.
        after a trusted build step wrote into it as the harness user."""
        uid = self.uid(space.slot)
        if uid is None:
            return
        for dirpath, dirnames, filenames in os.walk(space.work):
            os.chown(dirpath, uid, uid)
            for name in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), uid, uid)

    def environment(self, space: Workspace, extra: Mapping[str, str], path: str) -> dict[str, str]:
        env = {
            "PATH": path,
            "HOME": str(space.work),
            "TMPDIR": str(space.work),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
        }
        if self.netblock is not None:
            for name in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
                env[name] = env[name.upper()] = DEAD_PROXY
            env["no_proxy"] = env["NO_PROXY"] = ""
            env["PYTHONPATH"] = str(self.netblock)
        env.update(extra)
        return env

    def run(
        self,
        space: Workspace,
        command: Sequence[str],
        *,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        path: str = SYSTEM_PATH,
        untrusted: bool = True,
        name: str = "run",
    ) -> ExecResult:
        """Run `command` in `space.work`. `untrusted=False` (a compiler on the code,
        which does not execute it) keeps the harness's user and its caches, but
        still runs without network and under the limits."""
        uid = self.uid(space.slot) if untrusted else None
        if uid is not None:
            self.hand_over(space)
            nproc = limits.nproc
        else:
            nproc = user_task_count(os.getuid()) + limits.nproc
            if os.geteuid() == 0:
                nproc = 0  # root ignores RLIMIT_NPROC; trusted tools run as root
        spec = {
            "cpu": limits.cpu_s,
            "as": limits.address_space,
            "fsize": limits.file_size,
            "nofile": limits.nofile,
            "nproc": nproc,
            "net": self.isolation.network,
            "uid": uid,
            "cwd": str(space.work),
            "env": self.environment(space, env or {}, path),
        }
        output_file = space.logs / f"{name}.out"
        started = time.monotonic()
        timed_out = False
        with output_file.open("wb") as sink:
            process = subprocess.Popen(
                [self.python, "-I", "-S", str(JAIL), json.dumps(spec), "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
            try:
                returncode = process.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(process.pid)
                returncode = process.wait()
            kill_group(process.pid)  # whatever it started and left behind
            if uid is not None:
                kill_user(uid)
        duration = time.monotonic() - started
        with output_file.open("rb") as handle:
            output = handle.read(limits.output_bytes).decode("utf-8", "replace")
        if returncode == JAIL_FAILED and output.startswith("sandbox: "):
            raise SandboxError(output.strip())
        return ExecResult(returncode, timed_out, output, duration)
