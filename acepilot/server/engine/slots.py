"""Where the rows of a decode step sit in the KV buffer, and how to bring them together.

GroupQueryAttention takes one past/present tensor per layer, so the rows of one
run must be contiguous slots of the buffer. Developers pause between requests,
so the generating rows end up scattered among idle ones (each idle slot keeps a
developer's cache). A run over a window with holes computes the idle rows as
dummies; on a CPU, where a decode step of a batch is compute-bound, a dummy row
costs as much as a real one (measured: 23% of the rows of the 16-developer load
were dummies). Moving a row's valid cache positions into a hole costs one copy
of a few MB once; a dummy costs a row of compute at every step it stays. So the
scheduler closes the holes before every step (`compaction_moves`) and falls back
to ragged windows (`windows`) only where it cannot move rows (device buffers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def windows(indices: Sequence[int], max_gap: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges covering sorted row `indices`, merging gaps <= max_gap."""
    spans: list[tuple[int, int]] = []
    for index in sorted(indices):
        if spans and index - spans[-1][1] <= max_gap:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans


def compaction_moves(stepping: Sequence[int], num_slots: int) -> list[tuple[int, int]]:
    """The fewest slot swaps that make the `stepping` slots one contiguous block.

    The block (inside [0, num_slots)) is placed where it already covers the most
    stepping slots, the lowest such place on a tie; each stepping slot outside
    it is swapped with a non-stepping slot inside it (outermost first, into the
    lowest hole). Returns (outside, hole) pairs.
    """
    slots = sorted(set(stepping))
    count = len(slots)
    if count < 2 or slots[-1] - slots[0] + 1 == count:
        return []
    members = set(slots)
    starts = sorted(
        {lo for slot in slots for lo in range(slot - count + 1, slot + 1)}
        & set(range(num_slots - count + 1))
    )
    best = max(starts, key=lambda lo: (sum(1 for s in slots if lo <= s < lo + count), -lo))
    block = range(best, best + count)
    holes = [slot for slot in block if slot not in members]
    outside = sorted((slot for slot in slots if slot not in block), reverse=True)
    return list(zip(outside, holes, strict=True))


def swap_slots(
    arrays: Sequence[np.ndarray], a: int, b: int, used_a: int, used_b: int, scratch: np.ndarray
) -> None:
    """Exchange the first `used_a` positions of slot `a` with the first `used_b` of `b`.

    `arrays` are [slots, heads, positions, head_dim] buffers; only the valid
    positions of each slot are copied (the rest of a slot is never read).
    `scratch` ([heads, positions, head_dim], reused for every array) holds one
    slot's part meanwhile: a fresh temporary per array would be mapped and
    faulted in anew each time (it is above malloc's mmap threshold), which
    doubled the cost of a swap under load.
    """
    kept = scratch[:, :used_a]
    for array in arrays:
        kept[...] = array[a, :, :used_a]
        array[a, :, :used_b] = array[b, :, :used_b]
        array[b, :, :used_a] = kept
