"""Inside the sandbox: one sample's build and run steps, and the verdict's evidence.

Run as a separate program (standard library only, started with `-I -S`), never
imported by the harness:

    python3 -I -S supervisor.py < SPEC_JSON > RESULT_JSON

With bubblewrap it is the sandbox's first process (pid 2, after bwrap's own
init), running as root in the sandbox when the harness is root; without it
(the documented opt-out) it runs directly on the host. It:

1. writes the sample's files (from the spec on stdin, so nothing about the
   sample is ever in a process's argv or environment) into the work directory;
2. runs each step through jail.py (limits, uid, network), with stdout and
   stderr in a file only the supervisor can read, killing everything the step
   left behind when it ends (in bwrap's PID namespace: every other process);
3. for the step marked `channel`, the completion channel: a fresh random
   secret is written into a pipe that the program receives as fd 3 (the
   harness's own code reads it before any candidate code runs and closes it),
   and fd 4 is the write end of a report pipe. The program passes only if,
   besides exiting 0, the harness's code wrote `ACEPILOT-DONE <secret>` to fd
   4, which it does only after the tests returned (docs/evaluation.md);
4. prints one JSON object: per step the exit status, timeout, bounded output,
   duration, and whether the secret came back.

The secret exists only here and in the program's memory: never on disk, in
argv, in the environment, or in the result (only the boolean leaves).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

PR_SET_DUMPABLE = 4
REPORT_PREFIX = b"ACEPILOT-DONE "
REPORT_LIMIT = 1 << 16
SECRET_FD = 3
REPORT_FD = 4
MACRO = re.compile(r"#define ([A-Za-z_]\w*)")


def not_dumpable() -> None:
    """No ptrace and no /proc/<pid>/{mem,fd,environ} for code of the same uid."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def high_fd(fd: int) -> int:
    """`fd` moved to a number above 10 (close-on-exec), out of the way of 3 and 4."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def write_files(work: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad file name {name!r}")
        with open(os.path.join(work, name), "w", encoding="utf-8") as handle:
            handle.write(text)


def chown_tree(path: str, uid: int) -> None:
    """Give the work directory to the user of the next step (bounded: it is a tmpfs)."""
    os.chown(path, uid, uid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def kill_leftovers(spec: dict, pgid: int, uid: int | None) -> None:
    """Everything a step started. In bwrap's PID namespace (we are pid 2, bwrap's
    init pid 1) kill(-1) reaches every other process of the sandbox; on the host
    it would reach everything, so there only the group and the step's uid."""
    if spec.get("pidns") and os.getpid() == 2:
        for _ in range(50):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.01)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if uid is not None and uid != os.getuid():
        for _ in range(200):
            pids = processes_of(uid)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)


def run_step(spec: dict, step: dict, index: int) -> dict:
    uid = spec["uids"].get(step.get("as", "run"))
    if uid is not None:
        chown_tree(spec["work"], uid)
    jail_spec = {
        "cpu": step["cpu"],
        "as": step["as_bytes"],
        "fsize": step["fsize"],
        "nofile": step["nofile"],
        "nproc": step["nproc"],
        "net": spec["net"],
        "uid": uid,
        "cwd": spec["work"],
        "env": {**spec["env"], **step.get("env", {})},
    }
    command = [spec["python"], "-I", "-S", spec["jail"], json.dumps(jail_spec), "--", *step["argv"]]
    output_path = os.path.join(spec["private"], f"{index}-{step['name']}.out")
    secret = secrets.token_hex(16).encode()
    report_read = -1
    pass_fds: tuple[int, ...] = ()
    if step.get("channel"):
        # fds 3 and 4 of the program: every end is first moved above 10, then the
        # program's two are dup2'ed into place (this process is single-threaded).
        ends = [high_fd(fd) for fd in (*os.pipe(), *os.pipe())]
        secret_read, secret_write, report_read, report_write = ends
        os.write(secret_write, secret)
        os.close(secret_write)  # the program reads the secret, then end of file
        if uid is not None:  # the JVM reopens /proc/self/fd/3 and 4: a permission check
            os.fchown(secret_read, uid, uid)
            os.fchown(report_write, uid, uid)
        os.dup2(secret_read, SECRET_FD)
        os.dup2(report_write, REPORT_FD)
        os.close(secret_read)
        os.close(report_write)
        pass_fds = (SECRET_FD, REPORT_FD)
    started = time.monotonic()
    timed_out = False
    with open(output_path, "wb") as sink:
        os.chmod(output_path, 0o600)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        for fd in pass_fds:
            os.close(fd)
        try:
            returncode = process.wait(timeout=step["wall"])
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_leftovers(spec, process.pid, uid)
            returncode = process.wait()
        kill_leftovers(spec, process.pid, uid)
    duration = time.monotonic() - started
    reported = False
    if report_read >= 0:
        os.set_blocking(report_read, False)
        data = b""
        try:
            while len(data) < REPORT_LIMIT:
                chunk = os.read(report_read, REPORT_LIMIT)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:
            pass  # a writer outlived the kill (cannot happen in a PID namespace)
        os.close(report_read)
        reported = (REPORT_PREFIX + secret) in data.splitlines()
    with open(output_path, "rb") as handle:
        output = handle.read(spec["output_bytes"]).decode("utf-8", "replace")
    return {
        "name": step["name"],
        "returncode": returncode,
        "timed_out": timed_out,
        "output": output,
        "duration_s": duration,
        "reported": reported,
    }


def macros(path: str) -> dict[str, str]:
    """`g++ -E -dM` output -> {name: its #define line}."""
    found: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = MACRO.match(line)
            if match:
                found[match.group(1)] = line.rstrip("\n")
    return found


def cpp_guard(spec: dict, step: dict) -> dict:
    """Undo, for the names the tests and the harness use, every macro the candidate
    defined, redefined or removed (compared with the prompt alone), then assemble
    main.cpp = candidate part + that block + tests + harness."""
    started = time.monotonic()
    work = spec["work"]
    base = macros(os.path.join(work, step["base"]))
    cand = macros(os.path.join(work, step["cand"]))
    block = []
    for name in sorted(set(step["names"])):
        if cand.get(name) == base.get(name):
            continue
        if name in cand:
            block.append(f"#undef {name}")
        if name in base:
            block.append(base[name])
    with open(os.path.join(work, step["head"]), encoding="utf-8") as handle:
        head = handle.read()
    with open(os.path.join(work, step["tail"]), encoding="utf-8") as handle:
        tail = handle.read()
    with open(os.path.join(work, step["out"]), "w", encoding="utf-8") as handle:
        handle.write(head + "\n" + "".join(line + "\n" for line in block) + tail)
    return {
        "name": step["name"],
        "returncode": 0,
        "timed_out": False,
        "output": "".join(line + "\n" for line in block)[: spec["output_bytes"]],
        "duration_s": time.monotonic() - started,
        "reported": False,
    }


def main() -> None:
    not_dumpable()
    spec = json.loads(sys.stdin.read())
    sys.stdin.close()
    os.umask(0o077)
    os.makedirs(spec["private"], mode=0o700, exist_ok=True)
    os.chmod(spec["private"], 0o700)
    write_files(spec["work"], spec["files"])
    results = []
    for index, step in enumerate(spec["steps"]):
        if step.get("kind") == "cpp_guard":
            result = cpp_guard(spec, step)
        else:
            result = run_step(spec, step, index)
        results.append(result)
        if result["timed_out"] or result["returncode"] != 0:
            break
    sys.stdout.write(json.dumps({"steps": results}))
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # reported to the harness as a sandbox failure
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.stdout.flush()
        sys.exit(1)
