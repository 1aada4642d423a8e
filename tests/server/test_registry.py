"""The model registry: atomic commits, versions, the production pointer, untrusted manifests."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from acepilot.server import __version__
from acepilot.server.errors import RegistryError
from acepilot.server.registry import ModelEntry, Registry, default_root, sha256_file


def manifest_body(**overrides: Any) -> dict[str, Any]:
    """What a build passes to commit (the registry adds files, name, version, ...)."""
    body: dict[str, Any] = {
        "architecture": "codegen",
        "precision": "int4",
        "device": "cpu",
        "source": {"kind": "local", "path": "/nowhere", "sha256": "0" * 64},
        "graph": {
            "file": "model.onnx",
            "num_layers": 2,
            "num_kv_heads": 4,
            "head_dim": 32,
            "max_length": 128,
            "kv_dtype": "float32",
            "logits": "last",
        },
        "tokenizer": {"file": "tokenizer.json", "bos_token_id": 1, "eos_token_id": 2, "fim": None},
    }
    body.update(overrides)
    return body


def commit_fake(registry: Registry, name: str = "tiny", payload: bytes = b"graph") -> ModelEntry:
    with registry.stage(name) as staging:
        (staging / "model.onnx").write_bytes(payload)
        (staging / "tokenizer.json").write_text('{"model": {}}')
        return registry.commit(staging, name, manifest_body())


def rewrite_manifest(entry: ModelEntry, change: Any) -> None:
    manifest = json.loads((entry.path / "manifest.json").read_text())
    change(manifest)
    (entry.path / "manifest.json").write_text(json.dumps(manifest))


def staging_leftovers(root: Path) -> list[Path]:
    staging = root / ".staging"
    return list(staging.iterdir()) if staging.exists() else []


# ---- default location --------------------------------------------------------


def test_default_root_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ACEPILOT_REGISTRY", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "explicit"
    assert Registry().root == tmp_path / "explicit"
    monkeypatch.delenv("ACEPILOT_REGISTRY")
    assert default_root() == tmp_path / "xdg" / "acepilot" / "registry"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".local" / "share" / "acepilot" / "registry"


# ---- commit ------------------------------------------------------------------


def test_commit_writes_a_complete_manifest(tmp_path) -> None:
    registry = Registry(tmp_path)
    entry = commit_fake(registry)
    assert entry.path == tmp_path / "tiny" / "v1"
    assert (entry.name, entry.version) == ("tiny", "v1")
    on_disk = json.loads((entry.path / "manifest.json").read_text())
    assert on_disk == entry.manifest
    assert on_disk["format"] == 1
    assert on_disk["acepilot_version"] == __version__
    assert on_disk["created"].endswith("Z")
    assert on_disk["files"] == {
        "model.onnx": hashlib.sha256(b"graph").hexdigest(),
        "tokenizer.json": hashlib.sha256(b'{"model": {}}').hexdigest(),
    }
    assert on_disk["precision"] == "int4"  # the build's own fields are kept
    assert entry.graph_path == entry.path / "model.onnx"
    assert entry.tokenizer_path == entry.path / "tokenizer.json"
    entry.verify()
    assert staging_leftovers(tmp_path) == []
    assert registry.names() == ["tiny"]


def test_versions_count_up_and_sort_numerically(tmp_path) -> None:
    registry = Registry(tmp_path)
    for _ in range(11):
        commit_fake(registry)
    assert registry.versions("tiny") == [f"v{i}" for i in range(1, 12)]
    assert registry.versions("unknown") == []


def test_a_failed_build_leaves_nothing_behind(tmp_path) -> None:
    registry = Registry(tmp_path)

    class ConversionFailed(Exception):
        pass

    with pytest.raises(ConversionFailed), registry.stage("tiny") as staging:
        (staging / "model.onnx").write_bytes(b"half a graph")
        raise ConversionFailed
    assert registry.versions("tiny") == []
    assert registry.names() == []
    assert registry.production("tiny") is None
    assert not (tmp_path / "tiny").exists()
    assert staging_leftovers(tmp_path) == []


def test_a_stage_without_commit_is_removed(tmp_path) -> None:
    registry = Registry(tmp_path)
    with registry.stage("tiny") as staging:
        (staging / "model.onnx").write_bytes(b"x")
        assert staging.parent == tmp_path / ".staging"
    assert not staging.exists()
    assert registry.versions("tiny") == []


def test_a_rejected_manifest_commits_nothing(tmp_path) -> None:
    registry = Registry(tmp_path)
    with (
        pytest.raises(RegistryError, match=r"'graph\.num_layers' must be a positive integer"),
        registry.stage("tiny") as staging,
    ):
        (staging / "model.onnx").write_bytes(b"x")
        (staging / "tokenizer.json").write_bytes(b"{}")
        body = manifest_body()
        body["graph"]["num_layers"] = 0
        registry.commit(staging, "tiny", body)
    assert registry.versions("tiny") == []
    assert staging_leftovers(tmp_path) == []


def test_concurrent_commits_get_distinct_versions(tmp_path) -> None:
    registry = Registry(tmp_path)
    barrier = threading.Barrier(6)
    entries: list[ModelEntry] = []
    errors: list[BaseException] = []

    def build(index: int) -> None:
        try:
            with registry.stage("tiny") as staging:
                (staging / "model.onnx").write_bytes(b"graph %d" % index)
                (staging / "tokenizer.json").write_text("{}")
                barrier.wait()
                entries.append(registry.commit(staging, "tiny", manifest_body()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(e.version for e in entries) == sorted(f"v{i}" for i in range(1, 7))
    for entry in entries:
        entry.verify()  # every entry holds exactly its own files
    assert staging_leftovers(tmp_path) == []


def test_commit_retries_when_another_build_took_the_version(tmp_path, monkeypatch) -> None:
    """The race: versions() said v1 was free, but another build renamed into v1 first."""
    registry = Registry(tmp_path)
    first = commit_fake(registry, payload=b"first")
    stale = iter([[]])  # the first look at the versions misses v1
    real_versions = Registry.versions
    monkeypatch.setattr(
        Registry, "versions", lambda self, name: next(stale, None) or real_versions(self, name)
    )
    second = commit_fake(registry, payload=b"second")
    assert (first.version, second.version) == ("v1", "v2")
    assert (first.path / "model.onnx").read_bytes() == b"first"
    assert (second.path / "model.onnx").read_bytes() == b"second"


def test_commit_refuses_what_it_cannot_register_safely(tmp_path) -> None:
    registry = Registry(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match="not a staging directory"):
        registry.commit(elsewhere, "tiny", manifest_body())
    with pytest.raises(RegistryError, match="symbolic links"), registry.stage("tiny") as staging:
        (staging / "model.onnx").symlink_to("/etc/passwd")
        registry.commit(staging, "tiny", manifest_body())
    for bad in ("../escape", ".hidden", "a/b", "", "x" * 200):
        with pytest.raises(RegistryError, match="invalid model name"), registry.stage(bad):
            pass
    assert registry.names() == []


# ---- the production pointer -------------------------------------------------------


def test_production_pointer_flips_and_rolls_back(tmp_path) -> None:
    registry = Registry(tmp_path)
    v1 = commit_fake(registry, payload=b"one")
    v2 = commit_fake(registry, payload=b"two")
    assert registry.production("tiny") is None
    registry.set_production("tiny", "v1")
    assert registry.resolve("tiny").path == v1.path
    registry.set_production("tiny", "v2")
    assert registry.production("tiny") == "v2"
    assert registry.resolve("tiny").path == v2.path
    registry.set_production("tiny", "v1")  # rollback
    assert registry.resolve("tiny").version == "v1"
    assert (tmp_path / "tiny" / "production").read_text() == "v1\n"
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["production", "v1", "v2"]
    assert registry.resolve("tiny", "v2").path == v2.path


def test_production_must_name_an_existing_version(tmp_path) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    with pytest.raises(RegistryError, match="no version 'v7'"):
        registry.set_production("tiny", "v7")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.set_production("tiny", "latest")
    assert registry.production("tiny") is None


def test_broken_production_pointers_are_errors(tmp_path) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    (tmp_path / "tiny" / "production").write_text("../../etc")
    with pytest.raises(RegistryError, match="corrupt production pointer"):
        registry.resolve("tiny")
    (tmp_path / "tiny" / "production").write_text("v9\n")
    with pytest.raises(RegistryError, match="production points to v9, which does not exist"):
        registry.resolve("tiny")


def test_without_a_production_pointer_the_latest_version_is_used(tmp_path, caplog) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    commit_fake(registry)
    with caplog.at_level(logging.WARNING, logger="acepilot.server.registry"):
        assert registry.resolve("tiny").version == "v2"
    assert "no production pointer" in caplog.text


# ---- resolving and untrusted entries --------------------------------------------------


def test_resolve_by_name_or_by_directory(tmp_path, monkeypatch) -> None:
    registry = Registry(tmp_path / "registry")
    entry = commit_fake(registry)
    assert registry.resolve(str(entry.path)).manifest == entry.manifest
    assert registry.resolve(entry.path).version == "v1"
    monkeypatch.chdir(entry.path.parent)
    assert registry.resolve("./v1").path.resolve() == entry.path.resolve()
    with pytest.raises(RegistryError, match="only be given with a registry name"):
        registry.resolve(str(entry.path), "v1")


def test_unknown_names_list_what_exists(tmp_path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="the registry is empty"):
        registry.resolve("nope")
    commit_fake(registry, name="alpha")
    with pytest.raises(RegistryError, match=r"unknown model 'nope' .*known: alpha"):
        registry.resolve("nope")
    with pytest.raises(RegistryError, match=r"no version 'v3' \(versions: v1\)"):
        registry.resolve("alpha", "v3")
    with pytest.raises(RegistryError, match="no such registry model or entry directory"):
        registry.resolve(str(tmp_path / "missing" / "dir"))


def test_missing_manifest(tmp_path) -> None:
    registry = Registry(tmp_path)
    entry = commit_fake(registry)
    (entry.path / "manifest.json").unlink()
    with pytest.raises(RegistryError, match=r"no manifest\.json"):
        registry.resolve("tiny", "v1")
    with pytest.raises(RegistryError, match=r"no manifest\.json"):
        registry.resolve(str(entry.path))


def test_manifest_that_is_not_json(tmp_path) -> None:
    entry = commit_fake(Registry(tmp_path))
    (entry.path / "manifest.json").write_text('{"format": 1,')
    with pytest.raises(RegistryError, match="not valid JSON"):
        ModelEntry.load(entry.path)
    (entry.path / "manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(RegistryError, match="not valid JSON"):
        ModelEntry.load(entry.path)


def set_path(path: str, value: Any) -> Any:
    def change(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.clear() or m.update(x=1), "missing field 'format'"),
        (set_path("format", 2), "format 2 is not supported"),
        (set_path("format", "1"), "'format' must be an integer"),
        (set_path("files", []), "'files' must be an object"),
        (set_path("files", {}), "'files' is empty"),
        (lambda m: m["files"].update({"model.onnx": "ABC"}), "must be a lowercase hex sha256"),
        (set_path("graph", KeyError), "missing field 'graph'"),
        (set_path("graph.num_layers", "2"), "'graph.num_layers' must be an integer"),
        (set_path("graph.num_layers", True), "'graph.num_layers' must be an integer"),
        (set_path("graph.head_dim", -1), "must be a positive integer"),
        (set_path("graph.kv_dtype", "int4"), "graph.kv_dtype must be one of"),
        (set_path("graph.logits", "all"), "graph.logits must be 'last'"),
        (set_path("graph.file", "other.onnx"), "is not listed in 'files'"),
        (set_path("tokenizer.file", 3), "'tokenizer.file' must be a string"),
        (set_path("tokenizer.eos_token_id", "2"), "tokenizer.eos_token_id must be"),
        (set_path("device", "tpu"), "'device' must be one of"),
        (set_path("name", "../x"), "invalid name"),
        (set_path("version", "1"), "invalid version"),
        (lambda m: m.__setitem__("format", None), "'format' must be an integer"),
    ],
)
def test_malformed_manifests_name_the_bad_field(tmp_path, change, message) -> None:
    entry = commit_fake(Registry(tmp_path))
    rewrite_manifest(entry, change)
    with pytest.raises(RegistryError, match="malformed manifest") as error:
        ModelEntry.load(entry.path)
    assert message in str(error.value)


def test_manifest_that_is_not_an_object(tmp_path) -> None:
    entry = commit_fake(Registry(tmp_path))
    (entry.path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RegistryError, match="expected a JSON object"):
        ModelEntry.load(entry.path)


@pytest.mark.parametrize(
    "name", ["../../outside.onnx", "/etc/passwd", "sub/../../x", "a\\..\\b", "./model.onnx"]
)
def test_path_traversal_in_file_names_is_refused(tmp_path, name) -> None:
    entry = commit_fake(Registry(tmp_path / "registry"))
    (tmp_path / "outside.onnx").write_bytes(b"evil")

    def change(manifest: dict[str, Any]) -> None:
        manifest["files"][name] = "0" * 64

    rewrite_manifest(entry, change)
    with pytest.raises(RegistryError, match="path traversal"):
        ModelEntry.load(entry.path)


def test_a_symlink_out_of_the_entry_is_refused(tmp_path) -> None:
    entry = commit_fake(Registry(tmp_path / "registry"))
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"graph")  # same content and hash: only the location is wrong
    (entry.path / "model.onnx").unlink()
    (entry.path / "model.onnx").symlink_to(outside)
    with pytest.raises(RegistryError, match="points outside the entry directory"):
        ModelEntry.load(entry.path).verify()


def test_a_missing_file_is_named(tmp_path) -> None:
    registry = Registry(tmp_path)
    entry = commit_fake(registry)
    (entry.path / "tokenizer.json").unlink()
    with pytest.raises(RegistryError, match=r"model file 'tokenizer\.json' is missing"):
        registry.resolve("tiny", "v1")


def test_a_corrupt_file_is_named_by_verify(tmp_path) -> None:
    registry = Registry(tmp_path)
    entry = commit_fake(registry)
    with (entry.path / "model.onnx").open("r+b") as handle:
        handle.write(b"G")  # one flipped byte
    loaded = registry.resolve("tiny")  # cheap checks pass: the file is there
    with pytest.raises(RegistryError, match=r"model file 'model\.onnx' is corrupt") as error:
        loaded.verify()
    assert hashlib.sha256(b"Graph").hexdigest() in str(error.value)


def test_an_entry_copied_under_another_version_is_refused(tmp_path) -> None:
    registry = Registry(tmp_path)
    entry = commit_fake(registry)
    os.rename(entry.path, tmp_path / "tiny" / "v5")
    with pytest.raises(RegistryError, match="does not match where the entry lies"):
        registry.resolve("tiny", "v5")


def test_hashing_in_chunks_matches_hashlib(tmp_path) -> None:
    big = tmp_path / "big.bin"
    data = os.urandom(1 << 20) * 9  # more than one 8 MiB chunk
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest()


# ---- integrity: what independent adversarial testing broke (issue 13) ----------------


def test_commit_breaks_hard_links_to_files_outside_the_registry(tmp_path) -> None:
    """A staged file hard-linked to a scratch file must not stay linked: corrupting the
    scratch file in place would corrupt the registered version (and production)."""
    registry = Registry(tmp_path / "registry")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "model.onnx").write_bytes(b"graph")
    with registry.stage("tiny") as staging:
        os.link(scratch / "model.onnx", staging / "model.onnx")
        (staging / "tokenizer.json").write_text('{"model": {}}')
        entry = registry.commit(staging, "tiny", manifest_body())
    source, stored = (scratch / "model.onnx").stat(), (entry.path / "model.onnx").stat()
    assert stored.st_ino != source.st_ino
    assert stored.st_nlink == 1 and source.st_nlink == 1
    with (scratch / "model.onnx").open("r+b") as handle:
        handle.write(b"G")  # corrupt the scratch copy in place
    entry.verify()
    assert (entry.path / "model.onnx").read_bytes() == b"graph"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_manifest_with_a_non_finite_number_is_never_written(tmp_path, value) -> None:
    """A NaN metric would be written as a bare NaN, which strict JSON parsers reject."""
    registry = Registry(tmp_path)
    parity = {"status": "passed", "relative_logit_error": value}
    with (
        pytest.raises(RegistryError, match=r"parity\.relative_logit_error is not a finite"),
        registry.stage("tiny") as staging,
    ):
        (staging / "model.onnx").write_bytes(b"graph")
        (staging / "tokenizer.json").write_text("{}")
        registry.commit(staging, "tiny", manifest_body(parity=parity))
    assert registry.versions("tiny") == []


def test_committed_manifests_are_strict_json(tmp_path) -> None:
    entry = commit_fake(Registry(tmp_path), payload=b"graph")

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    json.loads((entry.path / "manifest.json").read_text(), parse_constant=refuse)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_manifest_with_nan_is_refused_on_load(tmp_path, constant) -> None:
    entry = commit_fake(Registry(tmp_path))
    rewrite_manifest(entry, set_path("parity", {"relative_logit_error": "PLACEHOLDER"}))
    path = entry.path / "manifest.json"
    path.write_text(path.read_text().replace('"PLACEHOLDER"', constant))
    with pytest.raises(RegistryError, match="not strict JSON"):
        ModelEntry.load(entry.path)


def test_a_deeply_nested_manifest_is_an_error_not_a_crash(tmp_path) -> None:
    entry = commit_fake(Registry(tmp_path))
    (entry.path / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(RegistryError, match="not valid JSON"):
        ModelEntry.load(entry.path)


def test_a_version_directory_that_is_a_symlink_out_of_the_registry_is_refused(tmp_path) -> None:
    """`<registry>/tiny/v2 -> /elsewhere/tiny/v2`: a version the registry does not hold."""
    registry = Registry(tmp_path / "registry")
    commit_fake(registry, payload=b"one")
    elsewhere = Registry(tmp_path / "elsewhere")
    commit_fake(elsewhere, payload=b"x")
    outside = commit_fake(elsewhere, payload=b"evil")  # its manifest says tiny v2
    (tmp_path / "registry" / "tiny" / "v2").symlink_to(outside.path)
    with pytest.raises(RegistryError, match="symbolic link"):
        registry.entry("tiny", "v2")
    with pytest.raises(RegistryError, match="symbolic link"):
        registry.set_production("tiny", "v2")
    assert registry.production("tiny") is None


def test_a_symlinked_manifest_is_refused(tmp_path) -> None:
    entry = commit_fake(Registry(tmp_path / "registry"))
    outside = tmp_path / "manifest.json"
    outside.write_text((entry.path / "manifest.json").read_text())
    (entry.path / "manifest.json").unlink()
    (entry.path / "manifest.json").symlink_to(outside)
    with pytest.raises(RegistryError, match="symbolic link"):
        ModelEntry.load(entry.path)


def test_a_production_pointer_that_is_not_a_regular_file_is_an_error_not_a_hang(
    tmp_path,
) -> None:
    """A FIFO in place of the pointer would block every reader forever."""
    registry = Registry(tmp_path)
    commit_fake(registry)
    os.mkfifo(tmp_path / "tiny" / "production")
    outcome: list[BaseException | str | None] = []

    def read() -> None:
        try:
            outcome.append(registry.production("tiny"))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)  # a guard against a hang, not a speed check
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(tmp_path / "tiny" / "production", "w"):
            pass
        reader.join(60)
        pytest.fail("reading a FIFO production pointer blocked")
    assert isinstance(outcome[0], RegistryError) and "not a regular file" in str(outcome[0])


def test_an_oversized_production_pointer_is_corrupt(tmp_path) -> None:
    registry = Registry(tmp_path)
    commit_fake(registry)
    (tmp_path / "tiny" / "production").write_text("v1" + " " * (1 << 20))
    with pytest.raises(RegistryError, match="corrupt production pointer"):
        registry.production("tiny")


def test_an_entry_digest_names_its_content(tmp_path) -> None:
    registry = Registry(tmp_path)
    one, two, again = (commit_fake(registry, payload=p) for p in (b"one", b"two", b"one"))
    assert one.digest == again.digest != two.digest
    assert len(one.digest) == 64
