"""Acepilot's serving side: model registry, ONNX engine, language server."""

__version__ = "0.1.0"
