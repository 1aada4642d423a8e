"""Where completions come from: the ONNX engine, PyTorch, or the canonical solutions.

- `EngineGenerator`: a registry entry through `server.engine.Engine`, the
  component that serves editors, so the figure measures what is served
  (the quantized graph, its sampler, its stop handling).
- `TorchGenerator`: a raw Hugging Face checkpoint directory (e.g. a
  fine-tune's `hf/` before it is built), with transformers on CUDA when
  available; stop sequences are cut from the decoded text afterwards.
- `CanonicalGenerator`: the dataset's own solutions, for the harness
  self-check.
- `GivenGenerator`: completions from a samples file (`--samples`).

Sample `i` of a problem is drawn with seed `seed + i` (engine) so reruns
give the same samples.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One completion: the text appended to the prompt and why generation ended."""

    text: str
    finish_reason: str


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0


class Generator(Protocol):
    """Makes `sampling.n` completions of a prompt."""

    description: dict[str, Any]

    def generate(
        self, prompt: str, stop: Sequence[str], sampling: Sampling, problem: Mapping[str, Any]
    ) -> list[Sample]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop sequence (excluded), and whether one was found."""
    positions = [text.find(s) for s in stop if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class CanonicalGenerator:
    """The reference solutions (n copies): what a perfect model would write."""

    def __init__(self) -> None:
        self.description: dict[str, Any] = {"kind": "canonical"}

    def generate(
        self, prompt: str, stop: Sequence[str], sampling: Sampling, problem: Mapping[str, Any]
    ) -> list[Sample]:
        return [Sample(str(problem["canonical_solution"]), "canonical")] * sampling.n


class FixedGenerator:
    """Given completions per task id (a test's broken solutions, or a samples file)."""

    def __init__(self, completions: Mapping[str, Sequence[str]], label: str = "fixed") -> None:
        self.completions = completions
        self.description = {"kind": label}

    def generate(
        self, prompt: str, stop: Sequence[str], sampling: Sampling, problem: Mapping[str, Any]
    ) -> list[Sample]:
        texts = list(self.completions[str(problem["task_id"])])
        return [Sample(texts[i % len(texts)], "fixed") for i in range(sampling.n)]


class GivenGenerator:
    """Completions produced elsewhere (`--samples FILE`): each problem's, as given and
    as many as given, never altered (no brace put back: finish_reason "given")."""

    def __init__(self, completions: Mapping[str, Sequence[str]], description: dict[str, Any]):
        self.completions = completions
        self.description = description

    def count(self, problem: Mapping[str, Any]) -> int:
        return len(self.completions[str(problem["task_id"])])

    def generate(
        self, prompt: str, stop: Sequence[str], sampling: Sampling, problem: Mapping[str, Any]
    ) -> list[Sample]:
        return [Sample(text, "given") for text in self.completions[str(problem["task_id"])]]


class EngineGenerator:
    """A registry entry run by the serving engine (onnxruntime)."""

    def __init__(self, entry: Any, threads: int | None = None) -> None:
        from acepilot.server.engine import Engine

        self.engine = Engine.load(entry, threads)
        self.warned = False
        self.description = {
            "kind": "engine",
            "name": entry.name,
            "version": entry.version,
            "path": str(entry.path),
            "precision": entry.manifest.get("precision"),
            "files": entry.files,
        }

    def generate(
        self, prompt: str, stop: Sequence[str], sampling: Sampling, problem: Mapping[str, Any]
    ) -> list[Sample]:
        from acepilot.server.engine import GenerationParams

        limit = self.engine.max_length // 2
        max_new = min(sampling.max_new_tokens, limit)
        if max_new < sampling.max_new_tokens and not self.warned:
            self.warned = True
            log.warning(
                "max_new_tokens %d exceeds half the model's context (%d): using %d",
                sampling.max_new_tokens,
                self.engine.max_length,
                max_new,
            )
        samples = []
        for index in range(sampling.n):
            params = GenerationParams(
                max_new_tokens=max_new,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=tuple(stop),
                seed=sampling.seed + index,
            )
            result = self.engine.generate(prompt, params)
            samples.append(Sample(result.text, result.finish_reason))
            if sampling.temperature == 0.0 and sampling.n > 1:
                # Greedy decoding is deterministic: the other samples are the same.
                samples.extend([samples[0]] * (sampling.n - 1))
                break
        return samples


class TorchGenerator:
    """A Hugging Face checkpoint directory run by transformers (CUDA when available)."""

    def __init__(self, path: Path, batch: int = 8) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self.model = model.to(self.device)  # type: ignore[arg-type]
        self.model.eval()
        self.batch = batch
        self.context = int(getattr(self.model.config, "n_positions", 2048))
        self.description = {"kind": "torch", "path": str(path), "device": self.device}

    def generate(
        self, prompt: str, stop: Sequence[str], sampling: Sampling, problem: Mapping[str, Any]
    ) -> list[Sample]:
        torch = self.torch
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        max_new = min(sampling.max_new_tokens, self.context // 2)
        ids = ids[:, -(self.context - max_new) :].to(self.device)
        eos = self.tokenizer.eos_token_id
        samples: list[Sample] = []
        torch.manual_seed(sampling.seed)
        while len(samples) < sampling.n:
            count = min(self.batch, sampling.n - len(samples))
            greedy = sampling.temperature == 0.0
            with torch.no_grad():
                out = self.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    max_new_tokens=max_new,
                    num_return_sequences=1 if greedy else count,
                    pad_token_id=eos,
                    eos_token_id=eos,
                )
            for row in out:
                new = row[ids.shape[1] :].tolist()
                ended = eos in new
                if ended:
                    new = new[: new.index(eos)]
                text, stopped = cut_at_stop(self.tokenizer.decode(new), stop)
                reason = "stop" if stopped else ("eos" if ended else "length")
                samples.append(Sample(text, reason))
            if greedy:
                samples.extend([samples[-1]] * (sampling.n - len(samples)))
        return samples[: sampling.n]
