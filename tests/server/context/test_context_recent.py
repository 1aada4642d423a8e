"""The recent-chunks ring buffer: bounded, newest first, deduplicated by similarity."""

from __future__ import annotations

import pytest

from acepilot.server.context import RecentChunks

TEXT = "\n".join(f"def f{i}(alpha, beta):\n    return alpha + beta + {i}" for i in range(40))


def test_edits_in_one_place_hold_one_slot() -> None:
    recent = RecentChunks(capacity=4)
    for line in (10, 11, 12, 13):
        recent.note("a.py", TEXT, line)
    assert len(recent.entries()) == 1


def test_similar_windows_replace_each_other_and_capacity_bounds() -> None:
    recent = RecentChunks(capacity=3, similarity=0.5)
    recent.note("a.py", "alpha beta gamma delta\n", 0)
    recent.note("b.py", "alpha beta gamma delta epsilon\n", 0)  # similar: replaces a.py's window
    assert [c.path for c in recent.entries()] == ["b.py"]
    for i, name in enumerate(["c.py", "d.py", "e.py", "f.py"]):
        recent.note(name, f"unique_{i} words_{i} here_{i}\n", 0, "recent_view")
    assert [c.path for c in recent.entries()] == [
        "f.py",
        "e.py",
        "d.py",
    ]  # newest first, oldest dropped
    recent.forget("e.py")
    assert [c.path for c in recent.entries()] == ["f.py", "d.py"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        RecentChunks(capacity=0)
    with pytest.raises(ValueError):
        RecentChunks().note("a.py", "x", 0, kind="recent_guess")
