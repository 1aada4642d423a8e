"""Document store: positions in every encoding, CRLF, incremental edits (property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acepilot.server.lsp.documents import (
    UTF8,
    UTF16,
    UTF32,
    Change,
    Document,
    DocumentError,
    DocumentStore,
    column_to_units,
    split_lines,
    units_to_column,
)

EMOJI = "😀"  # U+1F600: 2 UTF-16 units, 4 UTF-8 bytes
CJK_B = "𠀀"  # U+20000, CJK extension B


def ref_units(char: str, encoding: str) -> int:
    if encoding == UTF32:
        return 1
    if encoding == UTF16:
        return 2 if ord(char) > 0xFFFF else 1
    return len(char.encode("utf-8", "surrogatepass"))


def ref_position(text: str, offset: int, encoding: str) -> tuple[int, int]:
    """Reference: walk the text char by char (independent of the implementation)."""
    line, units, i = 0, 0, 0
    while i < offset:
        char = text[i]
        if char == "\r" and i + 1 < len(text) and text[i + 1] == "\n":
            if i + 1 == offset:  # between \r and \n: not a valid position; never asked
                break
            line, units, i = line + 1, 0, i + 2
            continue
        if char in "\r\n":
            line, units = line + 1, 0
        else:
            units += ref_units(char, encoding)
        i += 1
    return line, units


def test_split_lines_knows_only_lsp_breaks() -> None:
    assert split_lines("a\r\nb\rc\nd") == ["a\r\n", "b\r", "c\n", "d"]
    assert split_lines("") == [""]
    assert split_lines("x\n") == ["x\n", ""]
    assert split_lines("a\u2028b\x0cc\x85d") == ["a\u2028b\x0cc\x85d"]  # not LSP breaks


@pytest.mark.parametrize(
    ("encoding", "units", "column"),
    [(UTF16, 1, 1), (UTF16, 2, 1), (UTF16, 3, 2), (UTF16, 4, 2), (UTF16, 5, 3),
     (UTF8, 1, 1), (UTF8, 2, 1), (UTF8, 5, 2), (UTF8, 6, 2), (UTF8, 9, 3),
     (UTF32, 2, 2), (UTF32, 9, 3)],
)  # fmt: skip
def test_units_to_column_astral(encoding: str, units: int, column: int) -> None:
    text = "a" + EMOJI + CJK_B  # utf-16: 1+2+2, utf-8: 1+4+4
    assert units_to_column(text, units, encoding) == column


def test_column_to_units_round_trip() -> None:
    text = "é" + EMOJI + "x" + CJK_B + "\ud83d"  # a lone surrogate from JSON counts as 1
    assert [column_to_units(text, c, UTF16) for c in range(6)] == [0, 1, 3, 4, 6, 7]
    assert [column_to_units(text, c, UTF8) for c in range(5)] == [0, 2, 6, 7, 11]
    for enc in (UTF8, UTF16, UTF32):
        for c in range(len(text) + 1):
            assert units_to_column(text, column_to_units(text, c, enc), enc) == c


def test_clamp_past_end_of_line_and_document() -> None:
    doc = Document.open("file:///a.py", "python", 1, "ab\r\ncd" + EMOJI)
    assert doc.clamp(0, 99) == (0, 2)
    assert doc.clamp(7, 0) == (1, 3)
    assert doc.clamp(1, 4) == (1, 3)
    assert doc.clamp(1, 3) == (1, 2)  # inside the pair: rounds down
    with pytest.raises(DocumentError):
        doc.clamp(-1, 0)


def test_crlf_edits_join_and_split_breaks() -> None:
    doc = Document.open("u", "python", 1, "a\rx\nb")
    doc.apply("", (1, 0), (1, 1))  # delete x: "\r" + "\n" become one CRLF break
    assert doc.lines == ["a\r\n", "b"]
    doc.apply("z", (0, 1), (0, 1))
    assert doc.text == "az\r\nb"
    doc.apply("", (0, 2), (1, 0))
    assert doc.lines == ["azb"]
    doc.apply("\r", (0, 1), (0, 1))
    doc.apply("\n", (1, 0), (1, 0))
    assert doc.lines == ["a\r\n", "zb"]  # typed CR then LF: one break


def test_emoji_and_cjk_edit_in_utf16() -> None:
    doc = Document.open("u", "python", 1, f"s = '{EMOJI}{CJK_B}'\nprint(s)\n")
    # replace the CJK character: it starts at UTF-16 unit 7 and spans 2 units
    doc.apply("Z", (0, 7), (0, 9))
    assert doc.text == f"s = '{EMOJI}Z'\nprint(s)\n"


def test_store_unknown_document_and_bad_range() -> None:
    store = DocumentStore()
    with pytest.raises(DocumentError):
        store.get("file:///nope")
    doc = store.open("u", "python", 1, "abc")
    with pytest.raises(DocumentError):
        doc.apply("x", (0, 2), (0, 1))
    store.change("u", 2, [Change("X", (0, 0), (0, 1)), Change("full text")])
    assert store.get("u").text == "full text" and store.get("u").version == 2
    store.close("u")
    assert "u" not in store


ALPHABET = st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "é", EMOJI, CJK_B, "\t", "{", "}"])
TEXTS = st.lists(ALPHABET, max_size=30).map("".join)


def valid_offsets(text: str) -> list[int]:
    """Offsets a client could name: not between the \\r and \\n of a CRLF."""
    return [
        i for i in range(len(text) + 1) if not (0 < i < len(text) and text[i - 1 : i + 1] == "\r\n")
    ]


@settings(max_examples=300, deadline=None)
@given(
    initial=TEXTS,
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), TEXTS), max_size=25),
    encoding=st.sampled_from([UTF16, UTF8, UTF32]),
)
def test_incremental_edits_match_the_client(
    initial: str, edits: list[tuple[int, int, str]], encoding: str
) -> None:
    """Random small edits, with positions computed independently, keep the texts equal."""
    store = DocumentStore(encoding)
    store.open("u", "python", 0, initial)
    client = initial
    for version, (a, b, insert) in enumerate(edits, 1):
        offsets = valid_offsets(client)
        start, end = sorted((offsets[a % len(offsets)], offsets[b % len(offsets)]))
        change = Change(
            insert, ref_position(client, start, encoding), ref_position(client, end, encoding)
        )
        store.change("u", version, [change])
        client = client[:start] + insert + client[end:]
        doc = store.get("u")
        assert doc.text == client
        assert doc.chars == len(client)
        assert doc.lines == split_lines(client)
    # every valid position maps back to itself
    doc = store.get("u")
    for offset in valid_offsets(client):
        line, units = ref_position(client, offset, encoding)
        clamped = doc.clamp(line, units)
        assert doc.offset(*clamped) == offset
        assert doc.to_units(*clamped) == units


def test_thousand_edits_stay_identical() -> None:
    import random

    rng = random.Random(7)
    pieces = ["x", "def f():\n", "\r\n", EMOJI, "    ", "}", "é", "", "\n\n"]
    client = "start\r\n" * 20
    store = DocumentStore(UTF16)
    store.open("u", "python", 0, client)
    for version in range(1, 1001):
        offsets = valid_offsets(client)
        start = rng.choice(offsets)
        end = min(len(client), start + rng.choice([0, 0, 1, 2, 5]))
        if end not in offsets:
            end = start
        insert = rng.choice(pieces)
        change = Change(
            insert, ref_position(client, start, UTF16), ref_position(client, end, UTF16)
        )
        store.change("u", version, [change])
        client = client[:start] + insert + client[end:]
    assert store.get("u").text == client


def test_failed_change_makes_the_document_stale_until_full_text() -> None:
    store = DocumentStore()
    doc = store.open("u", "python", 1, "a\nb\n")
    store.change("u", 2, [Change("c", (2, 0), (2, 0))])  # (line count, 0): the end
    assert doc.text == "a\nb\nc" and not doc.stale
    with pytest.raises(DocumentError):
        store.change("u", 3, [Change("x", (9, 0), (9, 0))])  # past the end
    assert doc.stale
    store.change("u", 4, [Change("y", (0, 0), (0, 0))])  # ignored while stale
    assert doc.text == "a\nb\nc" and doc.stale
    store.change(
        "u", 5, [Change("ignored", (0, 0), (0, 0)), Change("new\n"), Change("!", (1, 0), (1, 0))]
    )
    assert doc.text == "new\n!" and not doc.stale and doc.version == 5
    with pytest.raises(DocumentError):
        store.change("u", 5, [Change("z", (0, 0), (0, 0))])  # the version did not increase
    assert doc.stale and doc.text == "new\n!"


def test_full_text_is_accepted_at_any_version() -> None:
    """The extension's resync answer repeats the current version: never a new staleness."""
    store = DocumentStore()
    doc = store.open("u", "python", 3, "a")
    store.change("u", 3, [Change("b")])
    assert doc.text == "b" and not doc.stale


def test_the_store_bounds_open_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    from acepilot.server.lsp import documents

    monkeypatch.setattr(documents, "MAX_DOCUMENTS", 3)
    monkeypatch.setattr(documents, "MAX_TOTAL_CHARS", 100)
    store = DocumentStore()
    for index in range(3):
        store.open(f"file:///{index}.py", "python", 1, "x" * 10)
    with pytest.raises(DocumentError, match="too many open documents"):
        store.open("file:///3.py", "python", 1, "")
    store.open("file:///0.py", "python", 2, "y" * 10)  # reopening is no new document
    store.close("file:///2.py")
    with pytest.raises(DocumentError, match="too large together"):
        store.open("file:///big.py", "python", 1, "z" * 90)
    assert len(store) == 2
