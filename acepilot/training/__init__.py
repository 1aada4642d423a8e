"""Acepilot's training side: corpora, fine-tuning, evaluation, gating, promotion."""
