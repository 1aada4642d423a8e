"""Real tree-sitter parses: definitions (names, kinds, signatures, docs) and imports per language."""

from __future__ import annotations

import pytest

from acepilot.server.context.grammars import language_of, normalize_language
from acepilot.server.context.imports import Import
from acepilot.server.context.symbols import parse


def names(text: str, language: str, path: str = "f") -> dict[str, tuple[str, str]]:
    return {d.name: (d.kind, d.parent) for d in parse(path, text, language).definitions}


def test_python_definitions_signatures_docstrings_and_no_locals() -> None:
    text = (
        "import os, app.models as m\n"
        "from ..pkg.mod import A, B as C\n"
        "from . import sibling\n"
        "from x import *\n"
        "LIMIT = 3\n"
        "@decorator\n"
        "def top(a: int,\n        b: str) -> bool:\n"
        '    """Checks things."""\n'
        "    def local(): pass\n"
        "    return True\n"
        "class K(Base):\n"
        "    def method(self): ...\n"
    )
    symbols = parse("p.py", text, "python")
    by_name = {d.name: d for d in symbols.definitions}
    assert set(by_name) == {"LIMIT", "top", "K", "method"}  # `local` is not a workspace symbol
    top = by_name["top"]
    assert top.signature == "def top(a: int, b: str) -> bool"
    assert top.doc == "Checks things."
    assert (top.start_line, top.signature_end_line, top.header_end_line) == (6, 7, 8)
    assert by_name["method"].kind == "method" and by_name["method"].parent == "K"
    assert by_name["LIMIT"].kind == "constant"
    assert symbols.imports == [
        Import(module="os"),
        Import(module="app.models"),
        Import(module="pkg.mod", names=("A", "B"), level=2),
        Import(module="", names=("sibling",), level=1),
        Import(module="x", names=("*",)),
    ]


def test_javascript_and_typescript() -> None:
    ts = 'import { a, b as c } from "./m";\nimport D from "../d";\nexport class K { run(): void {} }\nexport interface I {}\n'
    assert names(ts, "typescript") == {
        "K": ("class", ""),
        "run": ("method", "K"),
        "I": ("type", ""),
    }
    assert parse("f", ts, "typescript").imports == [
        Import(module="./m", names=("a", "b")),
        Import(module="../d", names=("D",)),
    ]
    js = 'const x = require("./x");\nfunction f(a) { const inner = 1; }\n'
    assert names(js, "javascript") == {"x": ("constant", ""), "f": ("function", "")}
    assert parse("f", js, "javascript").imports == [Import(module="./x")]
    assert names("export const App = () => <div/>;\n", "tsx") == {"App": ("constant", "")}


def test_go_rust_java() -> None:
    go = 'package p\nimport (\n\t"fmt"\n\tx "a/b"\n)\n// T is a thing.\ntype T struct{}\nfunc (t *T) M() {}\nconst C = 1\n'
    symbols = parse("f.go", go, "go")
    assert {d.name: d.kind for d in symbols.definitions} == {
        "T": "type",
        "M": "method",
        "C": "constant",
    }
    assert next(d for d in symbols.definitions if d.name == "T").doc == "// T is a thing."
    assert [i.module for i in symbols.imports] == ["fmt", "a/b"]
    rust = "mod geo;\nuse crate::geo::{Point, shapes::Circle};\npub trait Area { fn area(&self) -> f64; }\nimpl Area for Point { fn area(&self) -> f64 { 0.0 } }\n"
    symbols = parse("lib.rs", rust, "rust")
    assert ("Area", "type", "") in {(d.name, d.kind, d.parent) for d in symbols.definitions}
    assert ("area", "method", "Point") in {(d.name, d.kind, d.parent) for d in symbols.definitions}
    assert [i.module for i in symbols.imports] == [
        "crate::geo::Point",
        "crate::geo::shapes::Circle",
        "self::geo",
    ]
    java = "package a;\nimport static b.C.d;\nimport e.F;\n/** G. */\nclass G { G() {} int h(int x) { return x; } }\n"
    symbols = parse("G.java", java, "java")
    assert {(d.name, d.kind) for d in symbols.definitions} >= {("G", "class"), ("h", "method")}
    assert [i.module for i in symbols.imports] == ["b.C.d", "e.F"]


def test_c_and_cpp() -> None:
    c = '#include "a.h"\n#include <stdio.h>\n#define N 4\nstruct s { int x; };\nstruct s use;\nint proto(int);\nstatic int f(int a) { return a; }\n'
    symbols = parse("f.c", c, "c")
    assert {d.name: d.kind for d in symbols.definitions} == {
        "N": "constant",
        "s": "type",
        "proto": "function",
        "f": "function",
    }
    assert [i.module for i in symbols.imports] == ["a.h", "stdio.h"]
    cpp = "namespace ns {\nclass K { public: int m() const; };\nint free_fn(double d) { return 0; }\n}\n"
    found = {(d.name, d.kind, d.parent) for d in parse("f.cpp", cpp, "cpp").definitions}
    assert {("K", "class", "ns"), ("free_fn", "function", "ns")} <= found


def test_broken_code_still_yields_what_it_can() -> None:
    text = "def ok(a):\n    return a\n\ndef broken(:\n    pass\nclass Later: pass\n"
    assert {"ok", "Later"} <= set(names(text, "python"))


@pytest.mark.parametrize(
    ("filename", "language"),
    [
        ("a.py", "python"),
        ("b.tsx", "tsx"),
        ("c.h", "c"),
        ("d.hpp", "cpp"),
        ("e.rs", "rust"),
        ("f.txt", None),
    ],
)
def test_languages_by_extension(filename: str, language: str | None) -> None:
    assert language_of(filename) == language


def test_lsp_language_ids_map_onto_grammars() -> None:
    assert normalize_language("typescriptreact", "x") == "tsx"
    assert normalize_language("plaintext", "x.go") == "go"
    assert normalize_language(None, "x.txt") is None
