"""A file's definitions as the index keeps them: columns, not one object per definition.

A 10,000-file workspace has ~165,000 definitions. As `Definition` objects (ten
fields, their line numbers as Python ints) they took ~35 MB; as a table (the
names and parents as shared, interned strings, a kind byte and four int32 line
numbers) ~6 MB. `Definition` objects are made when a request asks for a file's
definitions, a few dozen files per request.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from acepilot.server.context.symbols import Definition

KINDS = ("function", "class", "method", "type", "constant")
KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class DefinitionTable:
    """One file's definitions: names, parents ("" at the top level), kinds, line numbers."""

    names: tuple[str, ...]
    parents: tuple[str, ...]
    kinds: bytes
    lines: npt.NDArray[np.int32]  # (n, 4): start, end, signature end, header end

    @classmethod
    def of(cls, definitions: Sequence[Definition]) -> DefinitionTable:
        return cls(
            names=tuple(sys.intern(d.name) for d in definitions),
            parents=tuple(sys.intern(d.parent) for d in definitions),
            kinds=bytes(KIND_CODES[d.kind] for d in definitions),
            lines=np.array(
                [(d.start_line, d.end_line, d.signature_end_line, d.header_end_line)
                 for d in definitions],
                dtype=np.int32,
            ).reshape(-1, 4),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.names)

    def definitions(
        self, path: str, name: str | None = None, parent: str | None = None
    ) -> list[Definition]:
        """The file's definitions, in file order: those named `name` and/or inside `parent`
        ("": top level) only, if given."""
        rows: Sequence[int] = range(len(self.names))
        if name is not None:
            rows = _where(self.names, name, rows)
        if parent is not None:
            rows = _where(self.parents, parent, rows)
        out = []
        for i in rows:
            start, end, signature_end, header_end = self.lines[i].tolist()
            out.append(
                Definition(
                    name=self.names[i],
                    kind=KINDS[self.kinds[i]],
                    path=path,
                    start_line=start,
                    end_line=end,
                    signature="",
                    parent=self.parents[i],
                    signature_end_line=signature_end,
                    header_end_line=header_end,
                )
            )
        return out


def _where(column: tuple[str, ...], value: str, rows: Sequence[int]) -> list[int]:
    return [i for i in rows if column[i] == value]
