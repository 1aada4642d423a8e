"""Evaluation of models: multi-language HumanEval (functional correctness in a
sandbox) and in-domain line completion; the gate and promotion build on both."""
