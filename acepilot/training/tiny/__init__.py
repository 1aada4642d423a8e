"""The test suite's model factory: tiny CodeGen checkpoints made here, in minutes, on a CPU.

No pretrained weights can be downloaded, so the tests (tests/conftest.py) and
the benchmarks make their own models, built from the same parts as
acepilot-tiny (the shipped model):

| what | module |
|---|---|
| the code sample: the standard library, some files held out | tiny/sample.py (bootstrap's source functions) |
| a byte-level BPE tokenizer | ../tokenizer.py |
| random CodeGen checkpoints (random biases and LayerNorm affines too) | ../codegen.py |
| a small CodeGen trained on the sample, with its training.json | tiny/train.py (through ../finetune) |
| held-out loss and count baselines | ../perplexity.py |
| built once into a cache, atomically, under a lock | ../atomic.py |

`source_hash` covers every module that determines what these fixtures
contain: the test cache (tests/conftest.py) and the trained model's own cache
key change with any of them, so a change rebuilds, a rerun does not.
"""

from __future__ import annotations

import hashlib
import importlib.util

# Every module whose code decides what a fixture holds (not merely how it is cached).
FIXTURE_MODULES = (
    "acepilot.training.tiny",
    "acepilot.training.tiny.sample",
    "acepilot.training.tiny.train",
    "acepilot.training.tokenizer",
    "acepilot.training.codegen",
    "acepilot.training.perplexity",
    "acepilot.training.bootstrap.sources",
    "acepilot.training.finetune.train",
    "acepilot.training.finetune.export",
    "acepilot.training.config",  # parses the loop's --key=value settings
)
# What the fixture modules import that decides only how a fixture is made, not what it
# holds (or is not used for the fixtures at all); tests/training/test_tiny.py checks that
# every other import is in FIXTURE_MODULES.
NOT_FIXTURE_CODE = {
    "acepilot.training.atomic": "builds into a temp dir and renames it, under a lock",
    "acepilot.training.machine": "thread count and a free port",
    "acepilot.server.build.graph_io": "perplexity through a built graph, not used by fixtures",
    "acepilot.server.registry": "perplexity through a built graph, not used by fixtures",
    "acepilot.training.corpus.filters": "npm sources only; the fixtures read the stdlib",
    "acepilot.server.errors": "exception classes",
}


def source_hash() -> str:
    """sha256 over the source of every module in FIXTURE_MODULES, in order."""
    digest = hashlib.sha256()
    for name in FIXTURE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"fixture module {name} not found")
        with open(spec.origin, "rb") as source:
            digest.update(name.encode() + b"\0" + hashlib.sha256(source.read()).digest())
    return digest.hexdigest()


__all__ = ["FIXTURE_MODULES", "NOT_FIXTURE_CODE", "source_hash"]
