"""This machine's share for local training runs: CPU threads, a free port.

Shared by the bootstrap stages and the test fixtures' training, which both run
the training loop on whatever cores this process may use (taskset included).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator


def cpu_threads() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads() -> Iterator[None]:
    """torch uses every core this process may use, for the block; then as it was."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def free_port() -> int:
    """A free local TCP port for a one-rank process group (no clash with other runs)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


__all__ = ["cpu_threads", "free_port", "torch_threads"]
