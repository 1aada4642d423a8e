"""Evaluation of models, the gate and promotion (docs/evaluation.md).

- humaneval.py: `acepilot eval humaneval`, the HumanEval-X harness (data.py,
  languages.py, generate.py, metrics.py; harness.py wraps the programs so only
  finished tests pass; sandbox.py + supervisor.py + jail.py run the code,
  cleanup.py removes what it leaves);
- line_completion.py: `acepilot eval completion`, in-domain line completion
  (line_tasks.py positions, line_predictors.py, line_metrics.py scoring);
  indomain.py keeps it per position for the gate;
- gate.py: paired per-language comparison and the promote/reject decision
  (gate_report.py renders it: table, Markdown, HTML, charts);
  workflow.py: results for a model or a results directory, the policy;
- promotion.py: `acepilot promote`, crash-safe; history.py: promotions.jsonl,
  the name's lock and `acepilot rollback`.
"""
