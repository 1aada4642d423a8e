"""The collector over a real index: sources, budget, stable order, caching per block."""

from __future__ import annotations

from pathlib import Path

import pytest

from acepilot.server.context import (
    KINDS,
    ContextChunk,
    ContextCollector,
    RecentChunks,
    WorkspaceIndex,
)


def count(text: str) -> int:
    return len(text) // 3 + 1


@pytest.fixture
def index(repo: Path) -> WorkspaceIndex:
    built = WorkspaceIndex(repo)
    built.index_all()
    return built


VIEW = (
    "from .models import User\n"
    "from app import util\n"
    "\n"
    "\n"
    "def render(user: User) -> str:\n"
    "    name = util.slugify(user.display_name())\n"
    "    \n"
)


def test_imported_definitions_signature_first_then_widened(index: WorkspaceIndex) -> None:
    collector = ContextCollector(index, sources=("imported_definition",))
    chunks = collector.collect(VIEW, len(VIEW) - 1, "py/app/render.py", "python", 1024, count)
    by_path = {c.path: c for c in chunks}
    assert set(by_path) == {"py/app/models.py", "py/app/util.py"}
    assert all(c.kind == "imported_definition" for c in chunks)
    # Budget to spare: the class is widened to its body, the function too.
    assert "def display_name" in by_path["py/app/models.py"].text
    assert "return text.lower()" in by_path["py/app/util.py"].text
    tight = ContextCollector(index, sources=("imported_definition",))
    small = tight.collect(VIEW, len(VIEW) - 1, "py/app/render.py", "python", 24, count)
    assert small and all("return" not in c.text for c in small)  # signatures only
    assert sum(c.tokens + count(f"# {c.path}\n") for c in small) <= 24


def test_near_cursor_symbols_resolve_names_through_the_symbol_table(index: WorkspaceIndex) -> None:
    text = "package main\n\nfunc run() {\n\ts := NewStore()\n\t_ = s.Count()\n}\n"
    collector = ContextCollector(index, sources=("near_cursor_symbol",))
    chunks = collector.collect(text, len(text) - 3, "goproj/cmd/run.go", "go", 512, count)
    assert {(c.path, c.start_line) for c in chunks} >= {
        ("goproj/store/store.go", 5),
        ("goproj/store/helpers.go", 2),
    }
    assert all(c.kind == "near_cursor_symbol" for c in chunks)


def test_bm25_open_tabs_and_recent_sources(index: WorkspaceIndex) -> None:
    text = "def total(cents):\n    return formatPrice(cents / 100)\n"
    recent = RecentChunks()
    # Files the index does not hold (unsaved buffers): nothing else can show these lines.
    recent.note("scratch/edit.py", "def edited_lately(): ...\n", 0, "recent_edit")
    recent.note("scratch/view.py", "class ViewedLately: ...\n", 0, "recent_view")
    collector = ContextCollector(
        index, recent, sources=("bm25", "recent_edit", "recent_view", "open_tab")
    )
    collector.open("web/src/lib/format.js", "function formatPrice(cents) {\n  return cents;\n}\n")
    chunks = collector.collect(text, len(text), "py/pay.py", "python", 2048, count)
    kinds = {(c.kind, c.path) for c in chunks}
    assert ("bm25", "web/src/lib/format.js") in kinds or (
        "open_tab",
        "web/src/lib/format.js",
    ) in kinds
    assert ("recent_edit", "scratch/edit.py") in kinds and (
        "recent_view",
        "scratch/view.py",
    ) in kinds


def test_recent_windows_of_another_language_stay_out(index: WorkspaceIndex) -> None:
    text = "def total(cents):\n    return cents\n"
    recent = RecentChunks()
    recent.note("scratch/edit.js", "function editedInJs() { return 1; }\n", 0, "recent_edit")
    recent.note("scratch/edit.ts", "function editedInTs(): number { return 1; }\n", 0)
    recent.note("scratch/edit.py", "def edited_in_python(): ...\n", 0, "recent_edit")
    collector = ContextCollector(index, recent, sources=("recent_edit",))
    chunks = collector.collect(text, len(text), "py/pay.py", "python", 2048, count)
    assert {c.path for c in chunks} == {"scratch/edit.py"}
    js = "function total(cents) {\n  return cents;\n}\n"
    chunks = collector.collect(js, len(js), "web/pay.js", "javascript", 2048, count)
    assert {c.path for c in chunks} == {"scratch/edit.js", "scratch/edit.ts"}  # one family


def test_budget_is_respected_and_order_is_by_path_and_line(index: WorkspaceIndex) -> None:
    collector = ContextCollector(index)
    for budget in (16, 64, 256, 1024):
        collector.invalidate()
        chunks = collector.collect(VIEW, len(VIEW) - 1, "py/app/render.py", "python", budget, count)
        headers = sum(count(f"# {p}\n") for p in {c.path for c in chunks})
        assert sum(c.tokens for c in chunks) + headers <= budget
        assert chunks == sorted(chunks, key=lambda c: (c.path, c.start_line, c.kind))
        assert all(c.tokens == count(c.text) and c.kind in KINDS for c in chunks)
    assert collector.collect(VIEW, 0, "py/app/render.py", "python", 0, count) == []


def test_choice_is_stable_while_typing_in_a_block(index: WorkspaceIndex) -> None:
    """Keystrokes inside one block of lines get the same chunks (the KV cache stays valid)."""
    collector = ContextCollector(index)
    first = collector.collect(VIEW, len(VIEW) - 1, "py/app/render.py", "python", 512, count)
    typed = VIEW + "return name"
    again = collector.collect(typed, len(typed), "py/app/render.py", "python", 512, count)
    assert again == first
    far = VIEW + "\n" * 40
    moved = collector.collect(far, len(far), "py/app/render.py", "python", 512, count)
    assert isinstance(moved, list)  # a new block: recomputed (may or may not differ)
    fresh = ContextCollector(index).collect(
        VIEW, len(VIEW) - 1, "py/app/render.py", "python", 512, count
    )
    assert fresh == first  # deterministic: same input, same chunks


def test_index_change_refreshes_the_choice(index: WorkspaceIndex, repo: Path) -> None:
    collector = ContextCollector(index, sources=("imported_definition",))
    before = collector.collect(VIEW, len(VIEW) - 1, "py/app/render.py", "python", 1024, count)
    (repo / "py/app/util.py").write_text(
        "def slugify(text: str, sep: str = '-') -> str:\n    return sep\n"
    )
    index.update(repo / "py/app/util.py")
    after = collector.collect(VIEW, len(VIEW) - 1, "py/app/render.py", "python", 1024, count)
    assert before != after and any("sep: str" in c.text for c in after)


def test_without_index_only_editor_sources_work() -> None:
    collector = ContextCollector(None)
    collector.open("b.py", "def helper_total(values):\n    return sum(values)\n")
    text = "values = [1]\nprint(helper_total(values))\n"
    chunks = collector.collect(text, len(text), "a.py", "python", 256, count)
    assert [c.kind for c in chunks] == ["open_tab"]


def test_chunks_are_frozen_keyword_dataclasses() -> None:
    chunk = ContextChunk(path="a.py", kind="bm25", text="x", tokens=1, score=0.5)
    with pytest.raises(AttributeError):
        chunk.text = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ContextChunk("a.py", "bm25", "x", 1, 0.5)  # type: ignore[misc]
    with pytest.raises(ValueError):
        ContextCollector(None, sources=("telepathy",))
