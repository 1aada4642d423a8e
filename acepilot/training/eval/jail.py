"""The last step before untrusted code runs: limits, no network, another user, exec.

Run as a separate program, never imported by the harness:

    python3 -I -S jail.py SPEC_JSON -- COMMAND [ARGS...]

It is a standalone script (standard library only, started with `-I -S`, so
no site packages and no environment variables shape it) because the limits
must be applied in the child between fork and exec, and doing that with
`preexec_fn` is unsafe in a multi-threaded parent (the harness runs samples
from a thread pool). The spec (JSON) says:

- `cpu` (seconds), `as` / `fsize` (bytes), `nofile`, `nproc`: resource limits,
  soft = hard so the code cannot raise them (CPU: SIGXCPU at the soft limit,
  SIGKILL one second later). Core dumps are off.
- `net`: "none" when the caller (bubblewrap) already gave the process an
  empty network namespace; "namespace" enters a new, empty network namespace (only a loopback
  interface, down): nothing can be reached, loopback included. As root this
  is `unshare(CLONE_NEWNET)`; otherwise an unprivileged user namespace is
  created with it.
- always: no_new_privs (setuid binaries gain nothing).
- `uid`: when set (the harness is root), drop to that user and group, with
  no supplementary groups, before exec. Root ignores RLIMIT_NPROC, so
  without this a fork bomb would be bounded only by the wall-clock timeout.
- `cwd`, `env`: the working directory and the complete environment.

File descriptors the caller passed (the completion channel's 3 and 4) are
left open for the command.

Any failure to apply what the spec asks ends the process with status 125 and
a message on stderr: the harness never runs code with less isolation than it
believes it has.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000
JAIL_FAILED = 125


def fail(message: str) -> None:
    sys.stderr.write(f"sandbox: {message}\n")
    sys.stderr.flush()
    os._exit(JAIL_FAILED)


def unshare_network() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) == 0:
        return
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return
    fail(f"cannot create a network namespace ({os.strerror(ctypes.get_errno())})")


def no_new_privileges() -> None:
    """Setuid binaries (su, ...) cannot raise the privileges of what runs next."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"cannot set no_new_privs ({os.strerror(ctypes.get_errno())})")


def set_limit(kind: int, value: int) -> None:
    resource.setrlimit(kind, (value, value))


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        fail("usage: jail.py SPEC_JSON -- COMMAND [ARGS...]")
    spec = json.loads(argv[1])
    command = argv[3:]
    try:
        if spec.get("net") == "namespace":
            unshare_network()
        no_new_privileges()
        set_limit(resource.RLIMIT_CORE, 0)
        if spec.get("cpu"):
            seconds = int(spec["cpu"])
            resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        for key, kind in (
            ("as", resource.RLIMIT_AS),
            ("fsize", resource.RLIMIT_FSIZE),
            ("nofile", resource.RLIMIT_NOFILE),
            ("nproc", resource.RLIMIT_NPROC),
        ):
            if spec.get(key):
                set_limit(kind, int(spec[key]))
        uid = spec.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(int(uid))
            os.setuid(int(uid))
            if os.getuid() == 0 or os.geteuid() == 0:
                fail("still root after dropping privileges")
        os.chdir(spec["cwd"])
        os.umask(0o077)
    except (OSError, ValueError, KeyError) as exc:
        fail(f"cannot set up the sandbox ({exc})")
    try:
        os.execvpe(command[0], command, dict(spec["env"]))
    except OSError as exc:
        fail(f"cannot run {command[0]} ({exc})")


if __name__ == "__main__":
    main(sys.argv)
