"""Logging for the language server: stderr or a file, never stdout (it carries the protocol).

Privacy: below debug level no log record may carry document text. Acepilot's
own messages never include it; pygls formats whole messages into its records
("Sending data: ...", "Failed to handle request ... <params>"), so the
`RedactFilter` replaces the arguments of every pygls record with their type
names unless the server runs with -vv (debug, for a developer's own machine).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactFilter(logging.Filter):
    """Strip message arguments (which may hold code) from third-party protocol records."""

    PREFIXES = ("pygls", "asyncio")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.PREFIXES) and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(f"<{type(arg).__name__}>" for arg in args)
        if record.name.startswith(self.PREFIXES) and record.exc_info:
            # The traceback is code of the server; the exception message may quote params.
            kind = record.exc_info[0]
            record.msg = f"{record.msg} ({kind.__name__ if kind else 'error'})"
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(verbosity: int, log_file: Path | None = None) -> None:
    """0: warnings, 1: info, 2: debug (with protocol payloads). To stderr or `log_file`."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(max(verbosity, 0), 2)]
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    if level > logging.DEBUG:
        handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pygls logs every message body at INFO; keep that for -vv only.
    logging.getLogger("pygls").setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    )
