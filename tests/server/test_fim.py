"""The one reader of a manifest's FIM and repository formats (acepilot/server/fim.py)."""

from __future__ import annotations

import pytest

from acepilot.server.fim import FimFormat, RepoFormat

STARCODER = {
    "prefix": "<fim_prefix>",
    "suffix": "<fim_suffix>",
    "middle": "<fim_middle>",
    "orders": ["psm", "spm"],
    "order": "psm",
    "stop": ["<|endoftext|>"],
}


def test_psm_and_spm_render() -> None:
    psm = FimFormat.from_manifest(STARCODER)
    spm = FimFormat.from_manifest({**STARCODER, "order": "spm"})
    assert psm is not None and spm is not None
    assert psm.render("P", "S") == "<fim_prefix>P<fim_suffix>S<fim_middle>"
    assert spm.render("P", "S") == "<fim_prefix><fim_suffix>S<fim_middle>P"
    assert psm.stop == ("<|endoftext|>",) and psm.orders == ("psm", "spm")


def test_codegen2_has_no_prefix_token() -> None:
    fim = FimFormat.from_manifest(
        {
            "prefix": "",
            "suffix": "<mask_1>",
            "middle": "<|endoftext|><sep><mask_1>",
            "stop": ["<eom>"],
        }
    )
    assert fim is not None
    assert fim.render("P", "S") == "P<mask_1>S<|endoftext|><sep><mask_1>"


def test_legacy_manifest_means_psm() -> None:
    fim = FimFormat.from_manifest({"prefix": "a", "suffix": "b", "middle": "c"})
    assert fim is not None and fim.order == "psm" and fim.stop == ()


@pytest.mark.parametrize(
    "value",
    [
        None,
        "psm",
        {},
        {"prefix": "a", "suffix": "b"},  # no middle
        {"prefix": "", "suffix": "", "middle": "c"},  # nothing marks the hole
        {**STARCODER, "order": "mps"},
        {**STARCODER, "middle": "x" * 1000},  # implausibly long: untrusted input
        {**STARCODER, "stop": "not a list"},
        {**STARCODER, "stop": ["s"] * 100},
        {**STARCODER, "prefix": 3},
    ],
)
def test_malformed_values_mean_no_fim(value: object) -> None:
    assert FimFormat.from_manifest(value) is None


def test_repo_format() -> None:
    repo = RepoFormat.from_manifest({"repo_name": "<repo_name>", "file_sep": "<file_sep>"})
    assert repo is not None and repo.repo_name == "<repo_name>"
    assert repo.render_file("a/b.py", "x = 1\n") == "<file_sep>a/b.py\nx = 1\n"
    assert RepoFormat.from_manifest({"repo_name": None, "file_sep": "<file_sep>"}) is not None
    assert RepoFormat.from_manifest(None) is None
    assert RepoFormat.from_manifest({"repo_name": "x"}) is None
