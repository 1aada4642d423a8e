"""What the completion pipeline needs to know about a language, by LSP language id.

The line comment (for the prompt's header and snippets), whether blocks are
delimited by braces (the completion ends when its braces balance out) or by
indentation only, and which line endings open a block (the cursor at such a
line's end asks for a multi-line completion).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    id: str
    comment: str = "#"  # line comment; a block comment pair is "/* */" style
    comment_end: str = ""  # for languages with only block comments (HTML, CSS)
    braces: bool = False  # blocks end when "{" ... "}" balance out
    openers: tuple[str, ...] = ()  # a line ending with one of these opens a block

    def comment_line(self, text: str) -> str:
        if self.comment_end:
            return f"{self.comment} {text} {self.comment_end}".rstrip()
        return f"{self.comment} {text}".rstrip()


BRACE_OPENERS = ("{", "(", "[", "=>", "->")


def c_like(language_id: str) -> Language:
    return Language(language_id, "//", braces=True, openers=BRACE_OPENERS)


_LANGUAGES = [
    Language("python", "#", openers=(":", "(", "[", "{", "\\")),
    Language("cython", "#", openers=(":", "(", "[", "{")),
    Language("ruby", "#", openers=(" do", "|", "{", "(", "[")),
    Language("shellscript", "#", openers=(" then", " do", "{", "(")),
    Language("perl", "#", braces=True, openers=BRACE_OPENERS),
    Language("r", "#", braces=True, openers=BRACE_OPENERS),
    Language("julia", "#", openers=("(", "[")),
    Language("yaml", "#", openers=(":",)),
    Language("toml", "#"),
    Language("dockerfile", "#"),
    Language("makefile", "#", openers=(":",)),
    Language("coffeescript", "#", openers=("->", "=>")),
    Language("elixir", "#", openers=(" do", "->")),
    Language("nim", "#", openers=(":", "=")),
    Language("powershell", "#", braces=True, openers=BRACE_OPENERS),
    Language("lua", "--", openers=(" then", " do", ")", "{")),
    Language("sql", "--", openers=("(",)),
    Language("haskell", "--", openers=(" where", " do", "=")),
    Language("elm", "--", openers=("=",)),
    Language("clojure", ";", openers=("(", "[")),
    Language("lisp", ";", openers=("(",)),
    Language("scheme", ";", openers=("(",)),
    Language("erlang", "%", openers=("->",)),
    Language("latex", "%"),
    Language("matlab", "%"),
    Language("vb", "'"),
    Language("html", "<!--", "-->", openers=(">",)),
    Language("xml", "<!--", "-->", openers=(">",)),
    Language("vue", "<!--", "-->", braces=True, openers=(">", *BRACE_OPENERS)),
    Language("svelte", "<!--", "-->", braces=True, openers=(">", *BRACE_OPENERS)),
    Language("markdown", "<!--", "-->"),
    Language("css", "/*", "*/", braces=True, openers=("{",)),
    Language("scss", "//", braces=True, openers=("{",)),
    Language("less", "//", braces=True, openers=("{",)),
    Language("ocaml", "(*", "*)", openers=("=", "->", " in")),
    Language("fsharp", "//", openers=("=", "->")),
]
_C_LIKE_IDS = [
    "c",
    "cpp",
    "cuda-cpp",
    "objective-c",
    "objective-cpp",
    "csharp",
    "java",
    "javascript",
    "javascriptreact",
    "typescript",
    "typescriptreact",
    "rust",
    "kotlin",
    "scala",
    "swift",
    "dart",
    "php",
    "groovy",
    "zig",
    "solidity",
    "d",
    "jsonc",
    "json",
    "proto",
    "go",
]

LANGUAGES: dict[str, Language] = {language.id: language for language in _LANGUAGES}
for _id in _C_LIKE_IDS:
    LANGUAGES[_id] = c_like(_id)
PLAIN = Language("plaintext", "#")


def language(language_id: str) -> Language:
    """The language of an LSP language id; unknown ids get '#' comments and indentation."""
    return LANGUAGES.get(language_id, Language(language_id or PLAIN.id, PLAIN.comment))
