# The seed's corpus: a team's Vue front-ends. Vue single-file components carry
# TypeScript or JavaScript in <script>, so those languages come along; the
# evaluation gate still checks every other language for regressions.
languages = ["vue", "typescript", "javascript", "css"]
# CodeGen-350M/2B/6B were trained with 2048 positions.
seq_len = 2048
# CodeGen 1 has no FIM sentinels; a FIM-capable tokenizer would allow ~0.5.
fim_rate = 0.0
