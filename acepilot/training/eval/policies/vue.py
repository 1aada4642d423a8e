# The seed's case: a Vue/TypeScript team. JavaScript is the HumanEval language closest to
# the target domain; it must gain 3 points, significantly, and no language may lose more
# than 2 points (significantly). Rust and Go are not used by the team: 5 points of slack.
target = "humaneval:js"
delta = 0.03
epsilon = 0.02
epsilon_per_metric = {"humaneval:rust": 0.05, "humaneval:go": 0.05}
