"""The workspace index over a real multi-language repository: walk, limits, imports, updates."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from context_repo import write_repo

from acepilot.server.context import IndexLimits, WorkspaceIndex
from acepilot.server.context.workspace import walk


def built(root: Path, limits: IndexLimits | None = None) -> WorkspaceIndex:
    index = WorkspaceIndex(root, limits)
    index.index_all()
    return index


def test_walk_respects_gitignore_vendored_generated_binary_and_unknown(repo: Path) -> None:
    files = {rel for rel, _, _ in walk(repo, IndexLimits())}
    assert "py/app/models.py" in files and "cpp/main.cpp" in files and "c/include/vec.h" in files
    for skipped in (
        "ignored_dir/secret.py",  # root .gitignore, a directory pattern
        "py/app/debug.log.py",  # root .gitignore, a glob
        "py/app/local_only.py",  # a nested .gitignore
        "node_modules/pkg/index.js",  # vendored
        "py/app/generated_pb2.py",  # "DO NOT EDIT"
        "py/app/blob.py",  # NUL bytes
        "notes.txt",  # not a language we parse
    ):
        assert skipped not in files, skipped


def test_limits_bound_files_size_and_total_bytes(repo: Path) -> None:
    assert len(built(repo, IndexLimits(max_files=3)).files) == 3
    small = built(repo, IndexLimits(max_file_bytes=60))
    assert small.files and all((repo / rel).stat().st_size <= 60 for rel in small.files)
    capped = built(repo, IndexLimits(max_total_bytes=300))
    assert 0 < capped.total_bytes <= 300
    with pytest.raises(ValueError):
        IndexLimits(max_files=0)


@pytest.mark.parametrize(
    ("importer", "language", "expected"),
    [
        ("py/app/views.py", "python", {"py/app/models.py", "py/app/util.py"}),
        ("web/src/main.ts", "typescript", {"web/src/api.ts", "web/src/lib/format.js"}),
        ("goproj/main.go", "go", {"goproj/store/store.go", "goproj/store/helpers.go"}),
        ("rs/src/lib.rs", "rust", {"rs/src/shapes.rs"}),
        ("java/src/com/acme/app/Main.java", "java", {"java/src/com/acme/Repo.java"}),
        ("c/src/vec.c", "c", {"c/include/vec.h"}),
        ("cpp/main.cpp", "cpp", {"cpp/shape.hpp"}),
    ],
)
def test_imports_resolve_to_workspace_files(
    repo: Path, importer: str, language: str, expected: set[str]
) -> None:
    index = built(repo)
    resolved = {
        f
        for _, files in index.resolve_imports(importer, language, index.files[importer].imports)
        for f in files
    }
    assert resolved == expected  # third-party/system imports (fmt, stdio) resolve to nothing


def test_go_sees_its_package_siblings(repo: Path) -> None:
    index = built(repo)
    assert index.siblings("goproj/store/helpers.go", "go") == ["goproj/store/store.go"]


def test_symbol_table_and_bm25(repo: Path) -> None:
    index = built(repo)
    (user,) = index.definitions_named("User")
    assert (user.path, user.kind, user.start_line) == ("py/app/models.py", "class", 0)
    assert [d.path for d in index.definitions_named("vec_len")] == [
        "c/include/vec.h",
        "c/src/vec.c",
    ]
    hits = index.search(["price", "cents"], k=3)
    assert hits and hits[0][0].path == "web/src/lib/format.js"
    assert index.search(["price", "cents"], k=3, exclude_path="web/src/lib/format.js") == []


def test_update_and_remove(repo: Path) -> None:
    index = built(repo)
    generation = index.generation
    (repo / "py/app/util.py").write_text("def kebab(text):\n    return text\n")
    assert index.update(repo / "py/app/util.py")
    assert index.definitions_named("slugify") == [] and index.definitions_named("kebab")
    (repo / "py/app/new.py").write_text("def fresh(): pass\n")
    assert index.update("py/app/new.py")  # a relative path works too
    index.remove("py/app/models.py")
    assert index.definitions_named("User") == [] and "py/app/models.py" not in index.files
    assert index.generation > generation
    index.rebuild()
    assert {ref.path for ref, _ in index.search(["fresh"], k=5)} == {"py/app/new.py"}
    assert not index.update("/elsewhere/x.py")  # outside the root: refused
    assert not index.update("notes.txt")  # not a parsed language


def test_updates_follow_the_walks_rules(repo: Path) -> None:
    """didSave / file-watcher updates never index what the walk skips (.gitignore above all)."""
    index = built(repo)
    for skipped in (
        "ignored_dir/secret.py",  # root .gitignore, a directory pattern
        "py/app/debug.log.py",  # root .gitignore, a glob
        "py/app/local_only.py",  # a nested .gitignore
        "node_modules/pkg/index.js",  # vendored
        "py/app/generated_pb2.py",  # generated
    ):
        assert (repo / skipped).is_file(), skipped
        assert not index.update(repo / skipped), skipped
        assert skipped not in index.files, skipped
    assert index.update("py/app/models.py")  # an admitted file still updates
    (repo / ".gitignore").write_text("py/app/models.py\n")  # newly ignored: dropped on update
    assert not index.update("py/app/models.py") and "py/app/models.py" not in index.files


def test_background_indexing_does_not_block_queries(tmp_path: Path) -> None:
    """Queries answer (from what is indexed so far) while the thread holds a parse in flight."""
    root = write_repo(tmp_path / "repo")
    for i in range(300):
        (root / f"bulk/m{i}.py").parent.mkdir(exist_ok=True)
        (root / f"bulk/m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 20)
    index = WorkspaceIndex(root, IndexLimits(yield_every=1))  # pauses after every file
    assert not index.ready
    index.start()  # returns at once
    seen: list[int] = []  # files indexed when each query returned
    done = threading.Event()

    def ask() -> None:
        while not index.ready:
            index.definitions_named("f0")
            seen.append(len(index.files))
        done.set()

    asker = threading.Thread(target=ask)
    asker.start()
    assert index.wait(timeout=120)
    asker.join(timeout=10)
    total = len(index.files)
    assert done.is_set() and total > 300 and len(index.bm25)
    # Queries returned while the walk was under way (a lock held for the whole walk would
    # make the first answer wait until every file was in).
    assert seen and min(seen) < total
    index.close()
