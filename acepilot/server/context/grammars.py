"""Which files we parse, and the tree-sitter parser of each language (grammars from PyPI).

Nine grammars: Python, JavaScript, TypeScript, TSX, Go, Rust, Java, C, C++
(py-tree-sitter and its grammar packages). A grammar is loaded once per process,
on first use. `node_text` is the one way the symbol and import readers read a node.
"""

from __future__ import annotations

import functools
import importlib

from tree_sitter import Language, Node, Parser

EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
}  # fmt: skip
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}
ALIASES = {"javascriptreact": "javascript", "typescriptreact": "tsx", "c++": "cpp"}


def language_of(filename: str) -> str | None:
    """The parser language of a file name (by extension), None for files we do not parse."""
    dot = filename.rfind(".")
    return EXTENSIONS.get(filename[dot:].lower()) if dot >= 0 else None


def normalize_language(language: str | None, filename: str) -> str | None:
    """An LSP languageId ("typescriptreact", "cpp", ...) mapped onto our grammars; else the extension."""
    if language:
        lang = ALIASES.get(language.lower(), language.lower())
        if lang in GRAMMARS:
            return lang
    return language_of(filename)


@functools.cache
def parser_for(language: str) -> Parser:
    """A tree-sitter parser for one language (grammar loaded once per process)."""
    module_name, function = GRAMMARS[language]
    capsule = getattr(importlib.import_module(module_name), function)()
    return Parser(Language(capsule))


def node_text(node: Node | None) -> str:
    """A node's source text ("" for no node)."""
    return (
        node.text.decode("utf-8", errors="replace")
        if node is not None and node.text is not None
        else ""
    )
