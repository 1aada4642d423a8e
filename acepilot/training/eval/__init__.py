"""Evaluation of models, the gate and promotion (docs/evaluation.md).

- humaneval.py: `acepilot eval humaneval`, the HumanEval-X harness (data.py,
  languages.py, generate.py, metrics.py; harness.py wraps the programs so only
  finished tests pass; sandbox.py + supervisor.py + jail.py run the code);
- line_completion.py: `acepilot eval completion`, in-domain line completion;
  indomain.py keeps it per position for the gate;
- gate.py: paired per-language comparison and the promote/reject decision;
  workflow.py: results for a model or a results directory, the policy;
- promotion.py: `acepilot promote` / `acepilot rollback`, crash-safe.
"""
