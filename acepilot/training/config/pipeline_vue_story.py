# The seed's story, small and real (docs/vue-story.md): fine-tune the default model on
# Vue single-file components from npm, gate it, see what happened to the other languages.
#
#   scripts/fetch-vue-corpus.sh          # the packages and held-out files, into ~/.cache
#   acepilot pipeline pipeline_vue_story  # corpus -> fine-tune -> build -> evaluate -> gate
#
# Everything it writes is outside the repository (ACEPILOT_VUE_STORY, default
# ~/.cache/acepilot/vue-story). Plain assignments; `os` only expands paths.
import os

_home = os.path.expanduser(os.environ.get("ACEPILOT_VUE_STORY", "~/.cache/acepilot/vue-story"))
_corpus = os.path.expanduser(os.environ.get("ACEPILOT_VUE_CORPUS", "~/.cache/acepilot/vue-corpus"))
_repo = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
_humaneval = os.environ.get("ACEPILOT_HUMANEVAL_X") or os.path.join(
    os.path.dirname(_repo), "shared", "data", "humaneval-x"
)

name = "vue-story"
registry = os.path.join(_home, "registry")  # a registry of its own: nothing else is promoted
work_dir = os.path.join(_home, "run")
# The base: the default model's Hugging Face checkpoint, the one setting to change when the
# default model changes. `acepilot bootstrap --stop-after train --work W` leaves it in W/train/hf;
# copy it here (or point ACEPILOT_VUE_BASE, or --init_from=, at it).
init_from = os.path.expanduser(os.environ.get("ACEPILOT_VUE_BASE", os.path.join(_home, "base")))
corpus = [
    # scripts/fetch-vue-corpus.sh: one directory (= corpus repository) per npm package
    "--sources="
    + ",".join(
        os.path.join(_corpus, "src", p) for p in ("primevue", "element-ui", "buefy", "keen-ui")
    ),
    "--validation_repos=keen-ui",  # held out: never trained on, its .vue files are the target
    "--languages=vue,typescript,javascript",
    "--name=vue",
    "--seq_len=1024",  # the default model's context
    "--fim_rate=0.5",  # as the default model was trained (StarCoder FIM tokens)
    # published npm code: detect-secrets would cost ~7 minutes on one core for nothing;
    # a team's own repositories keep it on
    "--scrub_secrets=False",
    "--workers=1",
    "--eval_data=" + _humaneval,
]
# A short fine-tune on one core (~10 minutes): 400 steps x 2 rows x 1,024 tokens = 819k
# tokens, 55% of an epoch of the training packages and 8% of what the base was trained on,
# at a third of the base's peak learning rate: it moves the model as a real fine-tune does.
finetune = [
    "--launcher=none",
    "--nproc=1",
    "--zero_stage=0",
    "--precision=fp32",
    "--micro_batch=2",
    "--learning_rate=1e-3",
    "--min_lr=1e-4",
    "--warmup_steps=5",
    "--max_steps=400",
    "--eval_interval=100",
    "--eval_iters=4",
    "--checkpoint_interval=100",
    "--keep_checkpoints=1",
    "--log_interval=10",
    "--master_port=29687",
    "--seed=0",
]
precision = "int8"  # as the default model ships
eval_data = _humaneval
eval_limit = 40  # problems per language, for base and candidate: the first 40 of 164
eval_max_new_tokens = 128
eval_workers = 1
# Line completion at 1,500 held-out positions: keen-ui (Vue, the target) and HumanEval-X's
# reference programs in all six languages (scripts/fetch-vue-corpus.sh writes them): what a
# 3M-parameter model's HumanEval pass@1 (zero) cannot show, exact match per language can.
completion_positions = 1500
completion_paths = [os.path.join(_corpus, "heldout-humaneval-x")]
# The target is Vue line completion. Guarded: every HumanEval-X language's pass@1, every
# language's line-completion exact match and held-out log-likelihood (the default) AND edit
# similarity: a 3M-parameter model finishes 0-10% of these lines exactly, so exact match
# alone is nearly blind to harm; the likelihood of held-out code is not.
# Tolerances: the `vue` policy's (2 points, 5 for Go and Rust).
gate = [
    "vue",
    "target=completion:vue:exact_match",
    "delta=0.02",
    "guarded=['humaneval:*','completion:*:exact_match','completion:*:edit_similarity',"
    "'completion:*:log_likelihood']",
]
