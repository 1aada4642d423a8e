"""Typing-ahead and the LRU cache."""

from __future__ import annotations

from acepilot.server.lsp.cache import LruCache, TypingAhead
from acepilot.server.lsp.documents import Document


def test_typing_ahead_serves_the_rest() -> None:
    doc = Document.open("u", "python", 1, "def f(x):\n    \n")
    ahead = TypingAhead()
    ahead.remember(doc, 1, 4, "return x + 1")
    assert ahead.answer(doc, 1, 4) == "return x + 1"
    doc.apply("ret", (1, 4), (1, 4))
    assert ahead.answer(doc, 1, 7) == "urn x + 1"
    doc.apply("X", (1, 7), (1, 7))  # typed something else
    assert ahead.answer(doc, 1, 8) is None


def test_typing_ahead_invalidated_by_edit_above() -> None:
    doc = Document.open("u", "python", 1, "a = 1\nb = \n")
    ahead = TypingAhead()
    ahead.remember(doc, 1, 4, "a + 1")
    doc.apply("a", (1, 4), (1, 4))
    assert ahead.answer(doc, 1, 5) == " + 1"
    doc.apply("2", (0, 4), (0, 5))
    assert ahead.answer(doc, 1, 5) is None


def test_lru() -> None:
    cache = LruCache(2)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"
    cache.put("c", "3")
    assert cache.get("b") is None and cache.get("a") == "1" and len(cache) == 2
