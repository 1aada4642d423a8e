"""How the index stores things compactly: file lines from bytes, definition tables, term bags, BM25.

The memory and speed work of issue 17 (docs/context.md, "Index cost") changed
representations; these tests pin what must not change with them.
"""

from __future__ import annotations

import numpy as np

from acepilot.server.context.chunks import FileLines, windows
from acepilot.server.context.retrieval import Bm25Snapshot, ChunkTerms, Vocabulary, term_id
from acepilot.server.context.symbols import parse
from acepilot.server.context.table import DefinitionTable

SOURCE = '''import os


class Store:
    """Keeps values."""

    def get(self, key):
        return self.values[key]


def open_store(path):
    return Store()
'''


def test_file_lines_cut_lines_out_of_bytes_as_tree_sitter_counts_them() -> None:
    lines = FileLines("a = 1\r\nb = 'é'\n\x0cc = 3\nlast".encode())
    assert lines.text(0, 0) == "a = 1"
    assert lines.text(0, 1) == "a = 1\nb = 'é'"  # CRLF read as one break
    assert lines.text(2, 2) == "\x0cc = 3"  # a form feed is no line break (tree-sitter rows)
    assert lines.text(3, 3) == "last" and lines.text(3, 10) == "last"
    assert lines.text(4, 4) == "" and lines.text(2, 1) == ""
    assert [w.start_line for w in windows("x\n\x0cy\n" * 30, 24)] == [0, 24, 48]


def test_definition_table_gives_back_the_parse() -> None:
    parsed = parse("store.py", SOURCE, "python", compact=True).definitions
    table = DefinitionTable.of(parsed)
    assert table.definitions("store.py") == parsed
    assert [d.name for d in table.definitions("store.py", parent="")] == ["Store", "open_store"]
    assert [d.name for d in table.definitions("store.py", parent="Store")] == ["get"]
    assert [d.kind for d in table.definitions("store.py", name="get")] == ["method"]


def test_a_bag_counts_identifiers_and_their_parts() -> None:
    ids, counts = Vocabulary().bag("user_name = get_user_name(user_name)")
    bag = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    assert bag[term_id("user_name")] == 2 and bag[term_id("user")] == 3
    assert bag[term_id("get_user_name")] == 1 and bag[term_id("name")] == 3
    assert Vocabulary().lookup(["user", "user"]) == [term_id("user")]


def test_a_query_keeps_its_rare_terms_when_common_ones_are_dropped() -> None:
    """The postings cap drops the commonest terms first: a rare term still finds its chunk."""
    vocab = Vocabulary()
    files = []
    for number in range(40):
        text = "self.value = self.value + 1\n" * 3 + (
            f"rare_marker_{number}\n" if number == 7 else ""
        )
        files.append(
            (
                f"m{number}.py",
                np.array([[0, 3]], dtype=np.int32),
                ChunkTerms.from_bags([vocab.bag(text)]),
            )
        )
    snapshot = Bm25Snapshot(files)
    hits = snapshot.search(vocab.lookup(["self", "value", "rare_marker_7"]), k=3)
    assert hits[0][0].path == "m7.py"
    assert snapshot.search(vocab.lookup(["nowhere_at_all"]), k=3) == []
