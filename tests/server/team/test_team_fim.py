"""Fill-in-the-middle through the team server: the manifest's template, in its order.

The tiny model has no FIM tokens of its own; its versions here get a
manifest `tokenizer.fim` with StarCoder2's token strings (PSM in one version,
SPM in the next) and a family name. With a `suffix`, the server must send the
model exactly `FimFormat.render(prompt, suffix)` (acepilot/server/fim.py): the
greedy text and the prompt token count equal the engine's own for that
text. /v1/models reports FIM, its order and the family.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from team_helpers import MODEL, TeamServer, auth, complete, new_token

from acepilot.server.engine import Engine, GenerationParams
from acepilot.server.fim import FimFormat
from acepilot.server.registry import Registry

FIM = {
    "prefix": "<fim_prefix>",
    "suffix": "<fim_suffix>",
    "middle": "<fim_middle>",
    "orders": ["psm", "spm"],
    "order": "psm",
    "stop": ["<|endoftext|>"],
}
PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


def register_fim_version(root: Path, order: str, family: str) -> str:
    """Commit a copy of v1 whose manifest has FIM tokens in `order`; returns the version."""
    registry = Registry(root)
    source = registry.entry(MODEL, "v1")
    with registry.stage(MODEL) as staging:
        for name in source.files:
            shutil.copy2(source.file_path(name), staging / name)
        manifest = {k: v for k, v in source.manifest.items() if k not in ("files", "version")}
        manifest["tokenizer"] = {**manifest["tokenizer"], "fim": {**FIM, "order": order}}
        manifest["family"] = family
        entry = registry.commit(staging, MODEL, manifest)
    return entry.version


@pytest.fixture(scope="module")
def versions(team_registry: Path) -> dict[str, str]:
    psm = register_fim_version(team_registry, "psm", "acepilot-fim")
    spm = register_fim_version(team_registry, "spm", "acepilot-fim")
    Registry(team_registry).set_production(MODEL, psm)
    return {"psm": psm, "spm": spm}


@pytest.fixture(scope="module")
def server(
    team_registry: Path, versions: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TeamServer]:
    log = tmp_path_factory.mktemp("team-fim") / "server.log"
    process = TeamServer(team_registry, log, "--poll", "0.2")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def expected(root: Path, version: str, text: str) -> tuple[str, int]:
    """The engine's own greedy completion of `text`, and its prompt token count."""
    engine = Engine.load(Registry(root).entry(MODEL, version), threads=1)
    return engine.generate(text, GenerationParams(max_new_tokens=12)).text, len(engine.encode(text))


def check_fim(server: TeamServer, root: Path, token: str, version: str, order: str) -> None:
    fim = FimFormat.from_manifest({**FIM, "order": order})
    assert fim is not None and fim.order == order
    body: dict[str, Any] = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 12, "temperature": 0}
    response = complete(server.url, token, **body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["system_fingerprint"] == f"{MODEL}-{version}"
    text, prompt_tokens = expected(root, version, fim.render(PREFIX, SUFFIX))
    assert answer["choices"][0]["text"] == text
    assert answer["usage"]["prompt_tokens"] == prompt_tokens
    # without a suffix the prompt goes as it is
    plain = complete(server.url, token, prompt=PREFIX, max_tokens=12, temperature=0).json()
    assert plain["usage"]["prompt_tokens"] == expected(root, version, PREFIX)[1]

    listed = httpx.get(server.url + "/v1/models", headers=auth(token)).json()["data"][0]
    assert listed["acepilot"]["fim"] is True
    assert listed["acepilot"]["fim_order"] == order
    assert listed["acepilot"]["family"] == "acepilot-fim"


def test_suffix_uses_the_manifest_fim_template_in_its_order(
    server: TeamServer, team_registry: Path, versions: dict[str, str]
) -> None:
    token = new_token(team_registry, "fim-user")
    check_fim(server, team_registry, token, versions["psm"], "psm")

    Registry(team_registry).set_production(MODEL, versions["spm"])
    deadline = time.monotonic() + 120
    while httpx.get(server.url + "/readyz").json().get("version") != versions["spm"]:
        assert time.monotonic() < deadline, server.log_text()[-2000:]
        time.sleep(0.05)
    check_fim(server, team_registry, token, versions["spm"], "spm")
