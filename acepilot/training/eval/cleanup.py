"""What a sample leaves behind, removed: its uid's processes and its directory tree.

Generated code is hostile until proven otherwise: it forks, double-forks into
new sessions, and leaves trees thousands of levels deep with permissions
removed. These helpers end every process of a sandbox uid (reading /proc, so
a process that left its group is found too), kill a process group, and delete
any tree without recursion. Used by sandbox.py after each sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import time
from pathlib import Path

log = logging.getLogger(__name__)


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
    """Delete a directory tree however deep, without recursion: a candidate can leave
    a tree thousands of levels deep, where shutil.rmtree's recursion (RecursionError)
    or full paths longer than PATH_MAX would fail. Walks with directory file
    descriptors (openat/unlinkat), makes directories writable first (code may chmod
    000 its files), and never follows symbolic links."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        top = os.open(path, flags)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    stack: list[tuple[int, str]] = [(top, "")]  # (directory fd, its name in the parent)
    try:
        while stack:
            fd = stack[-1][0]
            with contextlib.suppress(OSError):
                os.fchmod(fd, stat.S_IRWXU)
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:
                try:
                    sub = os.open(child, flags, dir_fd=fd)
                except PermissionError:
                    os.chmod(child, stat.S_IRWXU, dir_fd=fd)
                    sub = os.open(child, flags, dir_fd=fd)
                stack.append((sub, child))
                continue
            _, name = stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)
    os.rmdir(path)


__all__ = ["kill_group", "kill_user", "processes_of", "remove_tree", "user_task_count"]
