"""The imports of one file as written, one reader per language (tree-sitter nodes in, `Import` out).

The symbol walk (symbols.py) hands each import node it meets to the reader of the
file's language; resolve.py later maps the `Import`s onto workspace files. A
reader only reads what is written (module spec, imported names, Python's dots):
what a spec refers to is resolve.py's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tree_sitter import Node

from acepilot.server.context.grammars import node_text as _text

IMPORT_NODES = frozenset(
    {"import_statement", "import_from_statement", "import_declaration", "use_declaration", "preproc_include",
     "export_statement_with_source"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    """One import as written: the module spec, the names it brings in ("*" for all), Python's dots."""

    module: str
    names: tuple[str, ...] = ()
    level: int = 0


def python_import(node: Node) -> list[Import]:
    out: list[Import] = []
    if node.type == "import_statement":
        for child in node.named_children:
            target = child.child_by_field_name("name") if child.type == "aliased_import" else child
            out.append(Import(module=_text(target)))
        return out
    if node.type != "import_from_statement":
        return out
    module = node.child_by_field_name("module_name")
    level, name = 0, ""
    if module is not None and module.type == "relative_import":
        prefix = next((c for c in module.children if c.type == "import_prefix"), None)
        level = len(_text(prefix))
        name = next((_text(c) for c in module.named_children if c.type == "dotted_name"), "")
    else:
        name = _text(module)
    names: list[str] = []
    for child in node.children_by_field_name("name"):
        target = child.child_by_field_name("name") if child.type == "aliased_import" else child
        names.append(_text(target))
    if any(c.type == "wildcard_import" for c in node.named_children):
        names.append("*")
    out.append(Import(module=name, names=tuple(names), level=level))
    return out


def js_import(node: Node) -> list[Import]:
    out: list[Import] = []
    if node.type == "call_expression":  # require("./x") at the top level
        function = node.child_by_field_name("function")
        arguments = node.child_by_field_name("arguments")
        if _text(function) == "require" and arguments is not None and arguments.named_children:
            out.append(Import(module=_text(arguments.named_children[0]).strip("'\"`")))
        return out
    source = node.child_by_field_name("source")
    if source is None:
        return out
    names = [
        _text(n.child_by_field_name("name") or n)
        for n in _descendants(node, ("import_specifier", "export_specifier"))
    ]
    clause = next((c for c in node.named_children if c.type == "import_clause"), None)
    if clause is not None:
        names += [_text(c) for c in clause.named_children if c.type == "identifier"]
    out.append(Import(module=_text(source).strip("'\"`"), names=tuple(names)))
    return out


def go_import(node: Node) -> list[Import]:
    out: list[Import] = []
    for spec in _descendants(node, ("import_spec",)):
        out.append(Import(module=_text(spec.child_by_field_name("path")).strip('"`')))
    return out


def rust_import(node: Node) -> list[Import]:
    out: list[Import] = []
    if node.type == "mod_item":
        # `mod x;` (without a body: a file); parse() passes only those
        return [Import(module="self::" + _text(node.child_by_field_name("name")))]
    argument = node.child_by_field_name("argument")
    text = " ".join(_text(argument).split())
    if "{" in text:  # use a::b::{C, d::E};
        base, _, rest = text.partition("{")
        for item in rest.rstrip("}").split(","):
            item = item.strip().split(" as ")[0]
            if item:
                out.append(Import(module=base + item, names=(item.rsplit("::", 1)[-1],)))
    elif text:
        path = text.split(" as ")[0]
        out.append(Import(module=path, names=(path.rsplit("::", 1)[-1],)))
    return out


def java_import(node: Node) -> list[Import]:
    out: list[Import] = []
    text = _text(node).removeprefix("import").strip().rstrip(";").strip()
    text = text.removeprefix("static ").strip()
    out.append(Import(module=text, names=(text.rsplit(".", 1)[-1],)))
    return out


def c_import(node: Node) -> list[Import]:
    out: list[Import] = []
    path = node.child_by_field_name("path")
    if path is not None:
        out.append(Import(module=_text(path).strip('"<>')))
    return out


IMPORTERS: dict[str, Callable[[Node], list[Import]]] = {
    "python": python_import,
    "javascript": js_import,
    "typescript": js_import,
    "tsx": js_import,
    "go": go_import,
    "rust": rust_import,
    "java": java_import,
    "c": c_import,
    "cpp": c_import,
}


def read_imports(node: Node, language: str) -> list[Import]:
    """The imports an import node (or a top-level `require(...)` call) of `language` writes."""
    reader = IMPORTERS.get(language)
    return reader(node) if reader is not None else []


def _descendants(node: Node, types: tuple[str, ...]) -> list[Node]:
    found: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type in types:
            found.append(current)
        stack.extend(reversed(current.named_children))
    return found
