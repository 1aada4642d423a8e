"""Imports resolved to workspace files, per language, by path suffix.

The workspace root is rarely the import root (a `src/` layout, a Go module path,
a package opened on its own), so a module spec is matched against the *end* of
workspace paths: `httpx._models` finds `httpx/_models.py` or `_models.py` in a
workspace opened at the package, `net/http/internal` finds that directory under
a Go tree. Among several matches the one nearest the importing file wins.
Relative specs (Python's dots, JS `./x`, C `"x.h"`, Rust `self::`/`super::`)
are tried from the importing file's directory first.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict

from acepilot.server.context.imports import Import

JS_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".d.ts")
INDEX_FILES = tuple("/index" + s for s in JS_SUFFIXES)
SAME_PACKAGE = frozenset(
    {"go", "java"}
)  # a file sees its directory's definitions without importing


def _stem(path: str) -> str:
    """A path without its extension (`a/b.d.ts` -> `a/b`)."""
    head, _, tail = path.rpartition("/")
    base = tail.split(".", 1)[0] if not tail.startswith(".") else tail
    return f"{head}/{base}" if head else base


# A table's value: one path (most keys: a full path's suffixes are unique), or a set of them.
# A set costs ~200 bytes even with one element; at 10,000 files that was ~10 MB.
Paths = dict[str, str | set[str]]


def add_path(table: Paths, key: str, path: str) -> None:
    found = table.get(key)
    if found is None:
        table[key] = path
    elif isinstance(found, str):
        if found != path:
            table[key] = {found, path}
    else:
        found.add(path)


def discard_path(table: Paths, key: str, path: str) -> None:
    found = table.get(key)
    if found == path:
        del table[key]
    elif isinstance(found, set):
        found.discard(path)
        if len(found) == 1:
            table[key] = found.pop()


def get_paths(table: Paths, key: str) -> tuple[str, ...]:
    found = table.get(key)
    if found is None:
        return ()
    return (found,) if isinstance(found, str) else tuple(found)


class ModuleMap:
    """Path-suffix lookup over the workspace's files and directories (updated with the index)."""

    def __init__(self, root_name: str) -> None:
        self.root_name = (
            root_name  # e.g. "httpx": lets `httpx._models` match a workspace opened at httpx/
        )
        self._files: Paths = {}  # stem suffix -> files
        self._dirs: Paths = {}  # dir suffix -> files directly inside
        self.paths: set[str] = set()
        self._by_dir: dict[str, set[str]] = defaultdict(set)  # exact directory -> files

    @staticmethod
    def _suffixes(parts: list[str]) -> list[str]:
        return ["/".join(parts[i:]) for i in range(len(parts))]

    def _keys(self, path: str) -> tuple[list[str], list[str]]:
        full = f"{self.root_name}/{path}" if self.root_name else path
        stem_parts = _stem(full).split("/")
        dir_parts = posixpath.dirname(full).split("/") if "/" in full else []
        return self._suffixes(stem_parts), self._suffixes(dir_parts)

    def add(self, path: str) -> None:
        if path in self.paths:
            return
        self.paths.add(path)
        self._by_dir[posixpath.dirname(path)].add(path)
        stems, dirs = self._keys(path)
        for key in stems:
            add_path(self._files, key, path)
        for key in dirs:
            add_path(self._dirs, key, path)

    def remove(self, path: str) -> None:
        if path not in self.paths:
            return
        self.paths.discard(path)
        self._by_dir[posixpath.dirname(path)].discard(path)
        stems, dirs = self._keys(path)
        for table, keys in ((self._files, stems), (self._dirs, dirs)):
            for key in keys:
                discard_path(table, key, path)

    def _nearest(self, candidates: tuple[str, ...], importer: str) -> list[str]:
        """Candidates sorted by closeness to the importer (longest shared directory prefix), then name."""
        here = posixpath.dirname(importer).split("/")

        def shared(path: str) -> int:
            parts = posixpath.dirname(path).split("/")
            n = 0
            while n < min(len(parts), len(here)) and parts[n] == here[n]:
                n += 1
            return -n

        return sorted(candidates, key=lambda p: (shared(p), p))

    def file(self, spec: str, importer: str) -> list[str]:
        """The file(s) whose extension-less path ends with `spec` (slash-separated), nearest first."""
        spec = spec.strip("/")
        found = (
            get_paths(self._files, spec)
            or get_paths(self._files, spec + "/__init__")
            or get_paths(self._files, spec + "/mod")
        )
        return self._nearest(found, importer)[:1] if found else []

    def directory(self, spec: str, importer: str) -> list[str]:
        """The files directly in the directory whose path ends with `spec` (Go packages, Java `.*`)."""
        found = get_paths(self._dirs, spec.strip("/"))
        if not found:
            return []
        nearest = self._nearest(found, importer)[0]
        folder = posixpath.dirname(nearest)
        return sorted(p for p in found if posixpath.dirname(p) == folder)

    def relative(self, importer: str, spec: str) -> str:
        """`spec` joined to the importer's directory and normalised (may climb above the root)."""
        return posixpath.normpath(posixpath.join(posixpath.dirname(importer), spec))

    def exact(self, path: str) -> list[str]:
        return [path] if path in self.paths else []

    # --- per language ------------------------------------------------------------------------

    def resolve(self, importer: str, language: str, imp: Import) -> list[str]:
        """Workspace files an import of `importer` refers to (empty for third-party/system modules)."""
        resolver = {
            "python": self._python, "javascript": self._javascript, "typescript": self._javascript,
            "tsx": self._javascript, "go": self._go, "java": self._java, "rust": self._rust,
            "c": self._c, "cpp": self._c,
        }.get(language)  # fmt: skip
        return [p for p in (resolver(importer, imp) if resolver else []) if p != importer]

    def _python(self, importer: str, imp: Import) -> list[str]:
        module = imp.module.replace(".", "/")
        if imp.level:
            base = posixpath.dirname(importer)
            for _ in range(imp.level - 1):
                base = posixpath.dirname(base)
            target = posixpath.join(base, module) if module else base
            found = self._local_py(target)
            subs = [
                f
                for name in imp.names
                if name != "*"
                for f in self._local_py(posixpath.join(target, name))
            ]
            return found + subs
        found = self.file(module, importer)
        subs = [
            f for name in imp.names if name != "*" for f in self.file(f"{module}/{name}", importer)
        ]
        return found + subs

    def _local_py(self, target: str) -> list[str]:
        target = target.lstrip("./") if target.startswith("./") else target
        return (
            self.exact(target + ".py")
            or self.exact(target + ".pyi")
            or self.exact(target + "/__init__.py")
        )

    def _javascript(self, importer: str, imp: Import) -> list[str]:
        if not imp.module.startswith("."):
            return []  # bare specifier: a package from node_modules, not the workspace
        target = self.relative(importer, imp.module)
        for suffix in ("", *JS_SUFFIXES, *INDEX_FILES):
            if target + suffix in self.paths:
                return [target + suffix]
        if target.endswith(".js"):  # TS projects import "./x.js" meaning x.ts
            return self._javascript(importer, Import(module=imp.module[:-3]))
        return []

    def _go(self, importer: str, imp: Import) -> list[str]:
        parts = imp.module.split("/")
        for i in range(
            len(parts)
        ):  # longest suffix of the import path that is a workspace directory
            files = self.directory("/".join(parts[i:]), importer)
            if files:
                return [f for f in files if f.endswith(".go") and not f.endswith("_test.go")]
        return []

    def _java(self, importer: str, imp: Import) -> list[str]:
        module = imp.module.replace(".", "/")
        if module.endswith("/*"):
            return [f for f in self.directory(module[:-2], importer) if f.endswith(".java")]
        parts = module.split("/")
        for end in range(len(parts), 0, -1):  # a.b.C.inner: the class file is a prefix
            found = self.file("/".join(parts[:end]), importer)
            if found:
                return found
        return []

    def _rust(self, importer: str, imp: Import) -> list[str]:
        parts = [p for p in imp.module.split("::") if p]
        if not parts:
            return []
        here = posixpath.dirname(importer)
        if parts[0] in ("self", "super"):
            base = here if parts[0] == "self" else posixpath.dirname(here)
            parts = parts[1:]
            for end in range(len(parts), 0, -1):
                target = posixpath.join(base, *parts[:end])
                found = self.exact(target + ".rs") or self.exact(target + "/mod.rs")
                if found:
                    return found
            return []
        if parts[0] == "crate":
            parts = parts[1:]
        for end in range(len(parts), 0, -1):
            found = self.file("/".join(parts[:end]), importer)
            if found:
                return found
        return []

    def _c(self, importer: str, imp: Import) -> list[str]:
        local = self.relative(importer, imp.module)
        return (
            self.exact(local)
            or [
                p
                for p in self._nearest(get_paths(self._files, _stem(imp.module)), importer)
                if p.endswith(imp.module)
            ][:1]
        )

    def siblings(self, importer: str, language: str) -> list[str]:
        """Same-package files a Go/Java file sees without an import; a C/C++ file's own header."""
        folder = posixpath.dirname(importer)
        if language in SAME_PACKAGE:
            ext = ".go" if language == "go" else ".java"
            return sorted(
                p for p in self._by_dir.get(folder, ())
                if p.endswith(ext) and p != importer and not p.endswith("_test.go")
            )  # fmt: skip
        if language in ("c", "cpp"):
            stem = _stem(importer)
            return sorted(
                p for p in self._by_dir.get(folder, ()) if _stem(p) == stem and p != importer
            )
        return []
