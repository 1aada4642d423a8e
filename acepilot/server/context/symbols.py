"""Definitions of one source file, parsed with tree-sitter (imports: imports.py).

One walk for nine grammars (grammars.py): it knows, per language, which nodes
define a name (and what kind), where a definition's body starts (its signature
is the text before it), where its documentation is (Python docstrings, comments
just above for the others); the import nodes it meets go to the language's
reader in imports.py. Function bodies are not entered: local helpers are not
workspace symbols. Parsing is error-tolerant (a file being typed still yields
the definitions tree-sitter can recognise).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from tree_sitter import Node

from acepilot.server.context.grammars import node_text as _text
from acepilot.server.context.grammars import parser_for
from acepilot.server.context.imports import IMPORT_NODES, Import, read_imports

MAX_SIGNATURE = 300  # characters of a signature kept
MAX_DOC = 300  # characters of documentation kept

# node type -> definition kind; the name is the node's "name" field or its declarator's identifier
DEFINITIONS: dict[str, str] = {
    # python
    "function_definition": "function", "class_definition": "class",
    # javascript / typescript
    "function_declaration": "function", "generator_function_declaration": "function",
    "class_declaration": "class", "abstract_class_declaration": "class", "method_definition": "method",
    "interface_declaration": "type", "type_alias_declaration": "type", "enum_declaration": "type",
    "variable_declarator": "constant",
    # go
    "method_declaration": "method", "type_spec": "type", "const_spec": "constant", "var_spec": "constant",
    # rust
    "function_item": "function", "struct_item": "type", "enum_item": "type", "trait_item": "type",
    "type_item": "type", "const_item": "constant", "static_item": "constant", "macro_definition": "function",
    "function_signature_item": "function",
    # java
    "constructor_declaration": "method", "record_declaration": "class", "annotation_type_declaration": "type",
    # c / c++
    "struct_specifier": "type", "union_specifier": "type", "enum_specifier": "type", "class_specifier": "class",
    "type_definition": "type", "preproc_def": "constant", "preproc_function_def": "function",
    "alias_declaration": "type",
}  # fmt: skip
# Definitions whose body holds members (walked, members get this as parent).
CONTAINERS = frozenset(
    {
        "class_definition", "class_declaration", "abstract_class_declaration", "interface_declaration",
        "trait_item", "impl_item", "class_specifier", "struct_specifier", "record_declaration",
        "enum_declaration", "namespace_definition", "mod_item", "internal_module", "module",
    }
)  # fmt: skip
NAMESPACES = frozenset({"namespace_definition", "mod_item", "internal_module", "module"})
# Constants count only at the top level (not locals inside functions).
TOP_LEVEL_ONLY = frozenset({"variable_declarator", "const_spec", "var_spec"})
NAME_NODES = frozenset(
    {"identifier", "field_identifier", "type_identifier", "qualified_identifier", "destructor_name",
     "operator_name", "property_identifier", "primitive_type"}
)  # fmt: skip
BODY_FIELDS = ("body", "value")
MAX_DEPTH = 48  # nesting levels walked (a generated 500-deep expression must not exhaust the stack)
# Nodes never entered: no definition or import lives inside them.
EXPRESSIONS = frozenset(
    {"string", "binary_operator", "binary_expression", "boolean_operator", "comparison_operator",
     "dictionary", "list", "tuple", "set", "array", "object", "arguments", "argument_list",
     "concatenated_string", "template_string", "string_literal", "raw_string_literal",
     "interpreted_string_literal", "composite_literal", "initializer_list", "lambda", "arrow_function",
     "function_expression", "subscript", "attribute", "member_expression", "conditional_expression",
     "comment", "parenthesized_expression", "list_comprehension", "dictionary_comprehension"}
)  # fmt: skip
DOC_WRAPPERS = frozenset(
    {"type_declaration", "const_declaration", "var_declaration", "export_statement", "template_declaration",
     "lexical_declaration", "variable_declaration"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Definition:
    """A named definition: where it is, its one-line signature and the start of its documentation."""

    name: str
    kind: str
    path: str
    start_line: int
    end_line: int
    signature: str
    doc: str = ""
    parent: str = ""  # enclosing class/impl/namespace name, "" at the top level
    signature_end_line: int = -1  # last line of the signature (before the body)
    header_end_line: int = -1  # last line of signature + docstring (the "signature first" text)


@dataclass(slots=True, kw_only=True)
class FileSymbols:
    """What the parse of one file gives the index."""

    definitions: list[Definition] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)


def _name_of(node: Node) -> str:
    """The defined name: the "name" field, else the innermost identifier of the declarator chain."""
    name = node.child_by_field_name("name")
    if name is not None:
        return _text(name)
    current: Node | None = node.child_by_field_name("declarator")
    for _ in range(8):
        if current is None:
            return ""
        if current.type in NAME_NODES:
            return _text(current)
        current = current.child_by_field_name("declarator") or next(
            (c for c in current.named_children if c.type in NAME_NODES or "declarator" in c.type),
            None,
        )
    return ""


def _signature(node: Node, source: bytes) -> str:
    """The text from the definition's start to its body (or its first line), whitespace collapsed."""
    body = next(
        (node.child_by_field_name(f) for f in BODY_FIELDS if node.child_by_field_name(f)), None
    )
    if node.type in (
        "variable_declarator",
        "const_spec",
        "var_spec",
        "const_item",
        "static_item",
        "preproc_def",
    ):
        body = None  # a constant's value is its meaning: keep the first line whole
    end = body.start_byte if body is not None else node.end_byte
    text = source[node.start_byte : end].decode("utf-8", errors="replace")
    if body is None:
        text = text.split("\n", 1)[0]
    return " ".join(text.split())[:MAX_SIGNATURE].rstrip(" {:")


def _doc(node: Node, language: str) -> str:
    """Python's docstring, or the comment lines right above the definition for the other languages."""
    if language == "python":
        body = node.child_by_field_name("body")
        first = body.named_children[0] if body is not None and body.named_children else None
        if first is not None and first.type == "expression_statement" and first.named_children:
            string = first.named_children[0]
            if string.type == "string":
                return " ".join(_text(string).strip("\"'rbuRBU ").split())[:MAX_DOC]
        return ""
    lines: list[str] = []
    if node.parent is not None and node.parent.type in DOC_WRAPPERS:
        node = node.parent  # the comment sits above `type (...)`, `export ...`, `template <...>`
    sibling = node.prev_named_sibling
    line = node.start_point.row
    while sibling is not None and "comment" in sibling.type and sibling.end_point.row >= line - 1:
        lines.insert(0, _text(sibling))
        line = sibling.start_point.row
        sibling = sibling.prev_named_sibling
    return " ".join(" ".join(lines).split())[:MAX_DOC]


def _signature_end(node: Node, kind: str) -> int:
    """The last line before the body (a constant: its first line; its value may be long)."""
    if kind == "constant":
        return node.start_point.row
    body = node.child_by_field_name("body")
    if body is None:
        return node.end_point.row
    before = body.prev_sibling
    return before.end_point.row if before is not None else node.start_point.row


def _header_end(node: Node, language: str) -> int:
    """The last line of a definition's signature, or of its docstring in Python."""
    body = node.child_by_field_name("body")
    if body is None:
        return node.end_point.row
    if language == "python" and body.named_children:
        first = body.named_children[0]
        if (
            first.type == "expression_statement"
            and first.named_children
            and first.named_children[0].type == "string"
        ):
            return first.end_point.row
    return body.start_point.row


class _Walker:
    """Collects definitions and imports of one tree (one instance per parse)."""

    def __init__(self, path: str, source: bytes, language: str) -> None:
        self.path, self.source, self.language = path, source, language
        self.out = FileSymbols()
        self.depth = 0
        self.compact = False

    def walk(self, node: Node, parent: str, top: bool, in_type: bool = False) -> None:
        if self.depth >= MAX_DEPTH or node.type in EXPRESSIONS:
            return  # definitions do not nest this deep, nor inside expressions
        self.depth += 1
        for child in node.named_children:
            self.visit(child, parent, top, in_type)
        self.depth -= 1

    def visit(self, node: Node, parent: str, top: bool, in_type: bool = False) -> None:
        kind = DEFINITIONS.get(node.type)
        if node.type in IMPORT_NODES:
            self.out.imports.extend(read_imports(node, self.language))
            return
        if node.type == "call_expression" and top:
            self.out.imports.extend(read_imports(node, self.language))
        if node.type == "variable_declarator" and top:  # const x = require("./x")
            value = node.child_by_field_name("value")
            if value is not None and value.type == "call_expression":
                self.out.imports.extend(read_imports(value, self.language))
        if top and node.type in ("expression_statement", "declaration"):
            self._top_level_statement(node)
        if (
            kind is not None
            and (top or node.type not in TOP_LEVEL_ONLY)
            and self._is_definition(node)
        ):
            name = _name_of(node)
            if name:
                if kind == "function" and in_type:
                    kind = "method"
                self.out.definitions.append(
                    Definition(
                        name=sys.intern(name.rsplit("::", 1)[-1]),
                        kind=kind,
                        path=self.path,
                        start_line=node.start_point.row,
                        end_line=node.end_point.row,
                        signature=_signature(node, self.source) if not self.compact else "",
                        doc=_doc(node, self.language) if not self.compact else "",
                        parent=sys.intern(parent),
                        signature_end_line=_signature_end(node, kind),
                        header_end_line=_header_end(node, self.language),
                    )
                )
                if node.type in CONTAINERS:
                    self.walk(
                        node.child_by_field_name("body") or node,
                        name,
                        False,
                        node.type not in NAMESPACES,
                    )
                return
        if node.type in CONTAINERS:  # impl blocks, namespaces: members belong to the named type
            target = node.child_by_field_name("type") or node.child_by_field_name("name")
            body = node.child_by_field_name("body") or node
            self.walk(body, _text(target) or parent, False, node.type not in NAMESPACES)
            return
        if node.type in (
            "function_definition",
            "function_item",
            "method_definition",
            "arrow_function",
        ):
            return  # a body we do not enter (e.g. a C++ definition whose name we could not read)
        if (
            node.type in ("block", "statement_block", "compound_statement")
            and node.parent is not None
        ) and node.parent.type not in ("module", "program", "translation_unit"):
            return
        # Wrappers (decorators, exports, declarations, templates, preprocessor blocks) keep the level.
        self.walk(
            node, parent, top and node.type not in ("class_body", "declaration_list"), in_type
        )

    def _top_level_statement(self, node: Node) -> None:
        """Python's module constants (`NAME = ...`) and C/C++ prototypes (`int f(int);`)."""
        if node.type == "expression_statement":
            assignment = node.named_children[0] if node.named_children else None
            left = assignment.child_by_field_name("left") if assignment is not None else None
            if (
                assignment is None
                or assignment.type != "assignment"
                or left is None
                or left.type != "identifier"
            ):
                return
            name, kind = _text(left), "constant"
        else:
            declarator = node.child_by_field_name("declarator")
            if declarator is None or declarator.type != "function_declarator":
                return
            name, kind = _name_of(node), "function"
        if name:
            self.out.definitions.append(
                Definition(
                    name=name,
                    kind=kind,
                    path=self.path,
                    start_line=node.start_point.row,
                    end_line=node.end_point.row,
                    signature=_signature(node, self.source) if not self.compact else "",
                    doc=_doc(node, self.language) if not self.compact else "",
                    signature_end_line=node.start_point.row,
                    header_end_line=min(node.end_point.row, node.start_point.row + 3),
                )
            )

    def _is_definition(self, node: Node) -> bool:
        """Specifiers count only with a body (`struct x;` and `struct x v;` mention, not define)."""
        if node.type in (
            "struct_specifier",
            "union_specifier",
            "enum_specifier",
            "class_specifier",
        ):
            return node.child_by_field_name("body") is not None
        if node.type == "variable_declarator":  # JS/TS: only const/let/var at module level
            return (
                node.child_by_field_name("name") is not None
                and _text(node.child_by_field_name("name"))[:1] != "{"
            )
        return True


def parse(path: str, text: str, language: str, compact: bool = False) -> FileSymbols:
    """Definitions and imports of `text` (the file `path`, workspace-relative) in `language`.

    The index passes compact=True (no `signature`, no `doc`): a definition's text is read
    back from its file when it is shown, so 100,000 definitions do not each hold a copy.
    """
    source = text.encode("utf-8", errors="replace")
    tree = parser_for(language).parse(source)
    walker = _Walker(path, source, language)
    walker.compact = compact
    walker.walk(tree.root_node, "", True)
    if language == "rust":  # `mod x;` declarations are imports too (handled on their own)
        for node in tree.root_node.named_children:
            if node.type == "mod_item" and node.child_by_field_name("body") is None:
                walker.out.imports.extend(read_imports(node, language))
    walker.out.imports = list(
        dict.fromkeys(walker.out.imports)
    )  # `const {a} = require(x)` seen twice
    return walker.out
