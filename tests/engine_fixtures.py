"""A registry entry built from the tiny trained checkpoint, shared by the engine tests.

Import the fixtures into a test module (`from engine_fixtures import ...`).
An imported fixture is a separate definition in each module, so the build is
keyed on a fixed directory of the session's base temp dir: the first module
builds it, the others find it there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from acepilot.server.build.pipeline import build_model
from acepilot.server.registry import ModelEntry, Registry

TINY_NAME = "tiny"
TINY_INT8_NAME = "tiny-int8"


def registry_with(trained: Path, root: Path, name: str, precision: str) -> Path:
    """`root` holding `name` v1 built from the trained checkpoint (once per session)."""
    registry = Registry(root)
    if not registry.versions(name):
        build_model(str(trained), precision=precision, registry=registry, name=name, progress=False)
    return root


@pytest.fixture(scope="session")
def built_tiny_registry(
    trained_codegen_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A registry holding `tiny` v1: the trained tiny CodeGen, fp32, parity enforced."""
    root = tmp_path_factory.getbasetemp() / "engine-registry"
    return registry_with(trained_codegen_dir, root, TINY_NAME, "fp32")


@pytest.fixture(scope="session")
def built_tiny_entry(built_tiny_registry: Path) -> ModelEntry:
    return Registry(built_tiny_registry).resolve(TINY_NAME)


@pytest.fixture(scope="session")
def built_tiny_int8_registry(
    trained_codegen_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A registry holding `tiny-int8` v1: int8 weights and (the CPU default) an int8 KV cache."""
    root = tmp_path_factory.getbasetemp() / "engine-registry-int8"
    return registry_with(trained_codegen_dir, root, TINY_INT8_NAME, "int8")


@pytest.fixture(scope="session")
def built_tiny_int8_entry(built_tiny_int8_registry: Path) -> ModelEntry:
    return Registry(built_tiny_int8_registry).resolve(TINY_INT8_NAME)
