"""Physical floors of this machine: memory bandwidth and matmul throughput.

Decode reads every weight once per token, so weight bytes / bandwidth is the
fastest a token can be; prefill is compute-bound, so FLOPs / matmul throughput
is the fastest a prompt can be.
"""

from __future__ import annotations

import time

import numpy as np


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by a large array copy, best of N."""
    source = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """float32 GEMM throughput (FLOP/s) with numpy's BLAS, all threads, best of N."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
