"""Language label values for /metrics, bounded per token and overall.

Editors report a language id with each telemetry event, and it becomes a
label value of `acepilot_telemetry_events_total`. Each label value is a
series Prometheus keeps, so they must be bounded; and one token must not be
able to use up the bound for everyone (it once took all 64 slots, and later
languages of every developer were counted as "other").

- The language ids the language server knows (acepilot/server/lsp/languages.py,
  and "plaintext") are always labelled as themselves.
- Other ids (a language added since, or anything that fits the id pattern)
  are labelled as themselves within two budgets: `per_token` distinct ones per
  token and `total` overall. Past either, "other".

So a token adds at most `per_token` label values of its own, and the known
languages stay countable for everyone.
"""

from __future__ import annotations

import threading

from acepilot.server.lsp.languages import LANGUAGES, PLAIN

KNOWN = frozenset([*LANGUAGES, PLAIN.id])
OTHER = "other"
PER_TOKEN = 8
TOTAL = 64


class LanguageLabels:
    """`label(token, language)` -> the label value to count under (see the module)."""

    def __init__(self, per_token: int = PER_TOKEN, total: int = TOTAL) -> None:
        self.per_token = per_token
        self.total = total
        self._unknown: set[str] = set()  # labels given to ids outside KNOWN
        self._by_token: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def label(self, token: str, language: str) -> str:
        language = language.lower()
        if language in KNOWN:
            return language
        with self._lock:
            mine = self._by_token.setdefault(token, set())
            if language in mine:
                return language
            if len(mine) >= self.per_token or len(self._unknown) >= self.total:
                return OTHER
            mine.add(language)
            self._unknown.add(language)
            return language
