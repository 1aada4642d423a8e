"""Secrets out of the corpus, with detect-secrets: a model trained on a key can
complete it for anyone. Only counts by type are reported, never a value."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

PLACEHOLDER = "<REDACTED>"
# detect-secrets flags only the header line of a key; the body must go too
PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----",
    re.DOTALL,
)
PEM_HEADER = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
# a value shorter than this is a detector's prefix match (e.g. "ghp"), not the
# secret: the whole token around it is replaced instead
MIN_VALUE = 8
TOKEN_AROUND = r"[\w\-+/=.]*"


def scrub_file(path: Path, text: str) -> tuple[str, Counter[str]]:
    """Return `text` with every secret detect-secrets finds in `path` replaced, and
    the count per secret type. `text` is `path`'s content: detect-secrets reads the
    file itself because its config-file plugins (YAML, INI) parse by file type."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = SecretsCollection()
    with default_settings():
        found.scan_file(str(path))
    counts: Counter[str] = Counter()
    by_line: dict[int, list[str]] = {}
    for _, secret in found:
        counts[secret.type] += 1
        if secret.secret_value:
            by_line.setdefault(secret.line_number, []).append(secret.secret_value)
    if not counts:
        return text, counts
    lines = text.splitlines(keepends=True)
    for number, values in by_line.items():
        if not 0 < number <= len(lines):
            continue
        line = lines[number - 1]
        for value in sorted(values, key=len, reverse=True):
            if "PRIVATE KEY" in value:
                continue  # the whole block goes below
            if len(value) >= MIN_VALUE:
                line = line.replace(value, PLACEHOLDER)
            else:
                pattern = TOKEN_AROUND + re.escape(value) + TOKEN_AROUND
                line = re.sub(pattern, PLACEHOLDER, line)
        lines[number - 1] = line
    text = PEM_BLOCK.sub(PLACEHOLDER, "".join(lines))
    # a header without its END line (a truncated key): at least the header goes
    return PEM_HEADER.sub(PLACEHOLDER, text), counts
