"""The local generation engine: a registry entry's fused ONNX graph run by onnxruntime.

    engine = Engine.load(Registry().resolve("codegen-350M-mono"))
    result = engine.generate("def add(a, b):\n", GenerationParams(max_new_tokens=32),
                             session="file:///src/app.py")

No torch here: onnxruntime, tokenizers and numpy only.
"""

from acepilot.server.engine.engine import Engine, Prefilled
from acepilot.server.engine.generation import FINISH_REASONS, Generation, GenerationParams

__all__ = ["FINISH_REASONS", "Engine", "Generation", "GenerationParams", "Prefilled"]
