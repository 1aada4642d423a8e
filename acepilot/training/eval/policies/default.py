# The default gate policy (acepilot gate --policy default): no target, no regressions.
# Every field of acepilot/training/eval/gate.py's GatePolicy can be set here; a team copies
# this file and names it with --policy PATH (or the pipeline's `gate` list).

# The metric the fine-tune is for, e.g. "humaneval:js"; "" requires no improvement.
target = ""
# Minimum absolute improvement of the target (0.02 = two points of pass@1).
delta = 0.0
# The gain must also be significant (one-sided paired test at alpha), not noise.
require_significant_gain = True
# A guarded metric that drops by more than epsilon AND significantly is a regression.
epsilon = 0.02
# Per-metric tolerances, e.g. {"humaneval:rust": 0.05} for a language the team ignores.
epsilon_per_metric: dict[str, float] = {}
# Tolerated drop of held-out log-likelihood (nats per character; ~3% more perplexity).
log_likelihood_epsilon = 0.03
# Which metrics must not regress (fnmatch patterns).
guarded = ["humaneval:*", "completion:*:exact_match", "completion:*:log_likelihood"]
# McNemar's exact test for pass/fail per problem (n = 1), paired bootstrap otherwise.
test = "auto"
alpha = 0.05
# Another baseline (e.g. the untouched bigger model) beating the candidate on the target
# blocks promotion: promote that model instead.
block_if_baseline_better = True
