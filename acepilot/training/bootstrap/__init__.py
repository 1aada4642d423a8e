"""acepilot-tiny: Acepilot's own default model, trained here from code every machine has.

Model hubs are out of reach on many self-hosted networks, yet `make run` must
complete code on a fresh machine. The model is trained by the recipe in this
package, through the training package users run for their own models, and
shipped built under models/ (shipped.py registers it on first use, its
sha256 checked). `acepilot bootstrap` reproduces it from scratch:

| stage | module |
|---|---|
| 1. sources: permissively licensed code on this machine (Python, JS/TS, Go, Rust), split by package | sources.py, selection.py |
| 2. tokenizer: byte-level BPE with the FIM and repository special tokens | data.py |
| 3. data: FIM (PSM/SPM) and repository-format documents packed in rows | data.py, ../corpus/fim.py |
| 4. init, 5. train: a CodeGen through training/finetune (DeepSpeed) | train.py |
| 6. build: int8 ONNX with the parity gate | publish.py |
| 7. evaluate: held-out line completion and perplexity vs baselines | evaluate.py |
| 8. publish: production in the registry | publish.py |

pipeline.py runs them in order (cached and resumable, stages.py); config.py
holds the recipe.
"""

from acepilot.training.bootstrap.config import MODEL_NAME, PRESETS, STAGES, BootstrapConfig
from acepilot.training.bootstrap.evaluate import beats_baselines
from acepilot.training.bootstrap.pipeline import BootstrapResult, bootstrap
from acepilot.training.bootstrap.selection import select_sources

__all__ = [
    "MODEL_NAME",
    "PRESETS",
    "STAGES",
    "BootstrapConfig",
    "BootstrapResult",
    "beats_baselines",
    "bootstrap",
    "select_sources",
]
