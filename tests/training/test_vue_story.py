"""The seed's story (docs/vue-story.md): the npm Vue fetcher, HumanEval-X's reference
programs as files, the pipeline's extra held-out paths and the story's config.

No network: tarballs are built here, in npm's layout (`package/...`), and placed in the
fetcher's cache, where it checks their integrity exactly as after `npm pack`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from acepilot.training.config import configure
from acepilot.training.corpus.build import CorpusConfig
from acepilot.training.corpus.npm_fetch import (
    MARKER,
    NpmFetchError,
    NpmPackage,
    fetch_packages,
    integrity_of,
    licence_of,
    unpack,
)
from acepilot.training.eval.humaneval_files import write_files
from acepilot.training.eval.line_tasks import collect_files, sample_tasks
from acepilot.training.eval.workflow import load_policy
from acepilot.training.finetune.train import FinetuneConfig, check
from acepilot.training.pipeline import Pipeline, PipelineConfig, config_hash, write_json

VUE = '<template>\n  <button @click="go">{{ label }}</button>\n</template>\n'


def tarball(path: Path, files: dict[str, str]) -> Path:
    """A .tgz with npm's `package/` prefix."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def meta(licence: object, name: str = "ui-kit", version: str = "1.0.0") -> str:
    return json.dumps({"name": name, "version": version, "license": licence})


PACKAGE = NpmPackage("ui-kit", "1.0.0", "", ("src/",))


@pytest.mark.parametrize(
    "licence",
    [None, "GPL-3.0", "(MIT OR GPL-3.0)", "SEE LICENSE IN LICENSE.md", "UNLICENSED", ["MIT"]],
)
def test_licence_that_is_not_plainly_permissive_is_refused(licence: object) -> None:
    with pytest.raises(NpmFetchError, match="refusing"):
        licence_of({"license": licence}, "ui-kit@1.0.0")


def test_permissive_licences_are_read_in_both_forms() -> None:
    assert licence_of({"license": "MIT"}, "x@1") == "MIT"
    assert licence_of({"license": {"type": "Apache-2.0", "url": "..."}}, "x@1") == "Apache-2.0"


def test_gpl_package_is_refused_and_nothing_is_unpacked(tmp_path: Path) -> None:
    tgz = tarball(tmp_path / "p.tgz", {"package.json": meta("GPL-3.0"), "src/A.vue": VUE})
    with pytest.raises(NpmFetchError, match=r"GPL-3\.0"):
        unpack(tgz, PACKAGE, tmp_path / "out" / "ui-kit")
    assert not (tmp_path / "out").exists()


def test_unpack_keeps_sources_licence_and_metadata_only(tmp_path: Path) -> None:
    tgz = tarball(
        tmp_path / "p.tgz",
        {
            "package.json": meta("MIT"),
            "LICENSE": "MIT License ...",
            "src/A.vue": VUE,
            "src/util.js": "export const two = 1 + 1;\n",
            "src/types.d.ts": "export declare const two: number;\n",
            "src/util.min.js": "var a=1;",
            "dist/ui-kit.js": "built",
            "README.md": "# ui-kit",
        },
    )
    record = unpack(tgz, PACKAGE, tmp_path / "ui-kit")
    root = tmp_path / "ui-kit"
    kept = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert kept == [MARKER, "LICENSE", "package.json", "src/A.vue", "src/types.d.ts", "src/util.js"]
    assert record["licence"] == "MIT"
    assert record["files"] == {".d.ts": 1, ".js": 1, ".vue": 1}


def test_name_or_version_other_than_the_pin_is_refused(tmp_path: Path) -> None:
    tgz = tarball(tmp_path / "p.tgz", {"package.json": meta("MIT", version="6.6.6")})
    with pytest.raises(NpmFetchError, match=r"6\.6\.6"):
        unpack(tgz, PACKAGE, tmp_path / "ui-kit")


def test_cached_tarball_with_another_integrity_is_refused_and_removed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "tarballs").mkdir(parents=True)
    tgz = tarball(cache / "tarballs" / "ui-kit-1.0.0.tgz", {"package.json": meta("MIT")})
    pinned = dataclasses.replace(PACKAGE, integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(NpmFetchError, match="does not match the pinned"):
        fetch_packages(cache, [pinned])
    assert not tgz.exists()


def test_without_npm_the_error_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(NpmFetchError, match="npm is not installed"):
        fetch_packages(tmp_path / "cache", [PACKAGE])


def test_fetch_is_idempotent(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "tarballs").mkdir(parents=True)
    tgz = tarball(
        cache / "tarballs" / "ui-kit-1.0.0.tgz", {"package.json": meta("MIT"), "src/A.vue": VUE}
    )
    pinned = dataclasses.replace(PACKAGE, integrity=integrity_of(tgz))
    first = fetch_packages(cache, [pinned])
    marker = cache / "src" / "ui-kit" / MARKER
    stamp = marker.stat().st_mtime_ns
    assert fetch_packages(cache, [pinned]) == first
    assert marker.stat().st_mtime_ns == stamp  # not unpacked again
    assert json.loads((cache / "packages.json").read_text())[0]["files"] == {".vue": 1}


def test_humaneval_reference_programs_become_files_per_language(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    problems = {
        "python": {
            "task_id": "Python/0",
            "prompt": "def f(x):\n",
            "canonical_solution": "    return x + 1\n",
        },
        "rust": {
            "task_id": "Rust/0",
            "prompt": "/* add one */\n",
            "declaration": "fn f(x: i32) -> i32 {\n",
            "canonical_solution": "    x + 1\n}\n",
        },
    }
    for language, problem in problems.items():
        with gzip.open(data / f"humaneval_{language}.jsonl.gz", "wt") as handle:
            handle.write(json.dumps({**problem, "test": ""}) + "\n")
    assert write_files(data, tmp_path / "out", ["python", "rust"]) == {"python": 1, "rust": 1}
    rust = (tmp_path / "out" / "humaneval-rust" / "Rust_0.rs").read_text()
    assert rust == "/* add one */\nfn f(x: i32) -> i32 {\n    x + 1\n}\n"
    tasks = sample_tasks(collect_files([tmp_path / "out"]), 50, 0)
    assert {(t.language, t.domain) for t in tasks} == {
        ("python", "humaneval-python"),
        ("rust", "humaneval-rust"),
    }


def test_pipeline_completion_adds_the_extra_paths(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with gzip.open(corpus / "validation_files.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"repo": "keen-ui", "path": "src/A.vue", "text": VUE}) + "\n")
    extra = tmp_path / "heldout-humaneval-x"
    config = PipelineConfig(
        name="vue-story",
        init_from="base",
        work_dir=str(tmp_path / "run"),
        completion_positions=10,
        completion_paths=[str(extra)],
    )
    pipeline = Pipeline(config)
    write_json(pipeline.markers / "corpus.json", {"outputs": {"corpus": str(corpus)}})
    settings = pipeline.completion_settings()
    assert settings.paths == (str(pipeline.work / "heldout"), str(extra))
    assert (pipeline.work / "heldout" / "keen-ui" / "src" / "A.vue").read_text() == VUE


def test_config_hash_of_runs_without_extra_paths_is_unchanged() -> None:
    """Work directories made before `completion_paths` existed still resume."""
    config = PipelineConfig(name="m", init_from="base")
    record = dataclasses.asdict(config)
    del record["progress"], record["completion_paths"]
    old = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(config) == old
    assert config_hash(dataclasses.replace(config, completion_paths=["x"])) != old


def test_the_story_config_loads_and_every_part_validates(tmp_path: Path) -> None:
    config = configure(PipelineConfig(), ["pipeline_vue_story"])
    assert config.name == "vue-story" and config.init_from.endswith("base")
    assert config.eval_languages == ["python", "cpp", "java", "js", "go", "rust"]
    assert config.completion_paths[0].endswith("heldout-humaneval-x")
    corpus = configure(CorpusConfig(), config.corpus)
    assert corpus.validation_repos == ["keen-ui"]
    assert [Path(s).name for s in corpus.sources] == ["primevue", "element-ui", "buefy", "keen-ui"]
    assert corpus.languages == ["vue", "typescript", "javascript"] and corpus.seq_len == 1024
    files = [s for s in config.gate if "=" not in s]
    policy = load_policy(files, [s for s in config.gate if "=" in s])
    assert policy.target == "completion:vue:exact_match"
    assert policy.is_guarded("completion:python:exact_match") and policy.is_guarded("humaneval:go")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.npy").write_bytes(b"")
    finetune = configure(
        FinetuneConfig(),
        [*config.finetune, f"--init_from={tmp_path / 'base'}", f"--data_dir={tmp_path / 'data'}"],
    )
    check(finetune)
    assert finetune.launcher == "none" and finetune.max_steps >= 1


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_unreachable_registry_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real npm, pointed at a closed local port: nothing leaves the machine."""
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    with pytest.raises(NpmFetchError, match=r"ECONNREFUSED.*is the npm registry reachable"):
        fetch_packages(tmp_path / "cache", [PACKAGE])
    assert not (tmp_path / "cache" / "src").exists()
