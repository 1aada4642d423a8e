"""`acepilot model build` end to end: checkpoint -> fused graph -> parity gate -> registry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acepilot.server.build import parity
from acepilot.server.build.pipeline import build_model
from acepilot.server.cli import main
from acepilot.server.errors import BuildError, ModelSourceError
from acepilot.server.registry import Registry


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fp32_build_passes_the_exact_parity_gate(trained_codegen_dir, tmp_path, capsys) -> None:
    registry_dir = tmp_path / "registry"
    code = main(
        ["model", "build", str(trained_codegen_dir), "--precision", "fp32"]
        + ["--registry", str(registry_dir), "--name", "tiny"]
    )
    assert code == 0
    assert "registered tiny v1" in capsys.readouterr().out
    entry = Registry(registry_dir).resolve("tiny")
    manifest = entry.manifest
    assert manifest["precision"] == "fp32" and manifest["device"] == "cpu"
    assert manifest["source"]["kind"] == "local"
    assert manifest["parity"]["status"] == "passed"
    assert manifest["parity"]["max_abs_logit_error"] <= 1e-4
    assert manifest["parity"]["greedy_agreement"] == 1.0
    assert manifest["parity"]["greedy_tokens"] == 3 * 32
    assert manifest["graph"]["op_counts"]["GroupQueryAttention"] == manifest["config"]["n_layer"]
    for name, digest in manifest["files"].items():
        assert sha256(entry.path / name) == digest
    assert Registry(registry_dir).production("tiny") == "v1"


@pytest.mark.parametrize("precision", ["int8", "int4", "fp16"])
def test_reduced_precision_builds_pass_their_thresholds(
    trained_codegen_dir, tmp_path, precision
) -> None:
    entry = build_model(
        str(trained_codegen_dir),
        precision=precision,
        registry=Registry(tmp_path),
        name=f"tiny-{precision}",
        progress=False,
    )
    results = entry.manifest["parity"]
    assert results["status"] == "passed", results
    max_rel, min_top1, max_ppl = parity.THRESHOLDS[precision]
    assert results["relative_logit_error"] <= max_rel
    assert results["top1_agreement"] >= min_top1
    assert results["perplexity_change"] <= max_ppl
    ops = entry.manifest["graph"]["op_counts"]
    if precision != "fp16":
        assert ops["MatMulNBits"] == 4 * entry.manifest["config"]["n_layer"] + 1
        assert "MatMul" not in ops
    # The CPU default for weight-quantized builds is an int8 KV cache (tests/test_kv_cache.py).
    assert (
        entry.manifest["graph"]["kv_dtype"]
        == {"fp16": "float16", "int8": "int8", "int4": "int8"}[precision]
    )


def test_failed_parity_gate_registers_nothing(trained_codegen_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(parity.THRESHOLDS, "int4", (0.0, 1.01, 0.0))  # impossible to meet
    registry = Registry(tmp_path)
    with pytest.raises(BuildError, match="parity gate failed"):
        build_model(
            str(trained_codegen_dir), precision="int4", registry=registry, name="x", progress=False
        )
    assert registry.versions("x") == []
    assert registry.production("x") is None
    staging = tmp_path / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_parity_record_mode_registers_with_the_failures_written_down(
    trained_codegen_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.setitem(parity.THRESHOLDS, "int4", (0.0, 1.01, 0.0))
    entry = build_model(
        str(trained_codegen_dir),
        precision="int4",
        registry=Registry(tmp_path),
        parity="record",
        progress=False,
    )
    assert entry.manifest["parity"]["status"] == "failed"
    assert entry.manifest["parity"]["failures"]


def test_hub_id_without_network_is_a_clear_error(tmp_path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "acepilot.server.cli",
            "model",
            "build",
            "Salesforce/codegen-350M-mono",
        ]
        + ["--precision", "int4", "--registry", str(tmp_path / "registry")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "could not get 'Salesforce/codegen-350M-mono' from the Hugging Face hub" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "registry" / "codegen-350M-mono").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (
            lambda d: (d / "config.json").write_text(json.dumps({"model_type": "gpt_neox"})),
            "supported model types: codegen",
        ),
        (
            lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})),
            "hidden_size must be a positive integer",
        ),
        (lambda d: [p.unlink() for p in d.glob("*.safetensors")], "cannot load the checkpoint"),
    ],
)
def test_broken_checkpoints_give_clear_errors(
    trained_codegen_dir, tmp_path, damage, message
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(trained_codegen_dir, broken)
    damage(broken)
    registry = Registry(tmp_path / "registry")
    with pytest.raises((BuildError, ModelSourceError), match=message):
        build_model(str(broken), precision="fp32", registry=registry, progress=False)
    assert registry.names() == []


def test_not_a_directory_nor_hub_id(tmp_path, capsys) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"\0" * 10)
    assert (
        main(["model", "build", str(file), "--precision", "int4", "--registry", str(tmp_path)]) == 2
    )
    assert "not a directory" in capsys.readouterr().err
    assert (
        main(["model", "build", "../../etc", "--precision", "int4", "--registry", str(tmp_path)])
        == 2
    )
