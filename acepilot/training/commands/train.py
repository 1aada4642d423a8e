"""`acepilot train ...`: build a corpus, plan the memory of a fine-tune, fine-tune.

corpus and finetune take nanoGPT-style settings: config files (a path or a
name in acepilot/training/config/) and `--key=value` overrides, in order. plan takes
ordinary flags. Heavy imports (torch, deepspeed) happen inside each action.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    train = subparsers.add_parser("train", help="corpus, memory plan and DeepSpeed fine-tuning")
    actions = train.add_subparsers(dest="train_command", metavar="ACTION", required=True)

    from acepilot.training.config import add_settings
    from acepilot.training.corpus.build import CorpusConfig

    corpus = actions.add_parser(
        "corpus",
        help="build a versioned, tokenized corpus from local directories and git URLs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read the sources, keep code of the chosen languages, drop vendored, generated, "
            "minified and binary files, exact and near duplicates and HumanEval-X content, "
            "scrub secrets, split by repository, tokenize with the model's tokenizer and pack. "
            "With --fim_rate above 0, that share of the train documents is written in "
            "fill-in-the-middle form (character cuts; PSM or SPM by --fim_spm_rate; the middle "
            "from a cursor to a line end for --fim_line_rate of them; the --fim_tokens "
            "sentinels, single tokens of the tokenizer), as acepilot bootstrap trains and "
            "serving prompts.\n\n"
            "example:\n  acepilot train corpus corpus_vue --sources=~/src/app,https://host/team/lib.git "
            "--tokenizer=./codegen-350M-mono --eval_data=./humaneval-x"
        ),
    )
    add_settings(corpus, CorpusConfig())
    corpus.set_defaults(func=run_corpus)

    from acepilot.training.finetune.train import FinetuneConfig

    finetune = actions.add_parser(
        "finetune",
        help="fine-tune a CodeGen checkpoint on a corpus with DeepSpeed (ZeRO 0-3, offload, LoRA)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Launch acepilot/training/finetune/train.py on every rank through torchrun, DeepSpeed's "
            "launcher (multi-node: --launcher=deepspeed --hostfile=hosts) or this process. "
            "Resumes from out_dir/checkpoints; ends with a Hugging Face checkpoint in out_dir/hf.\n\n"
            "examples:\n"
            "  acepilot train finetune --init_from=./codegen-350M-mono --data_dir=corpora/team/v1 "
            "--nproc=2\n"
            "  acepilot train finetune --init_from=./codegen-6B-mono --data_dir=... --nproc=4 "
            "--zero_stage=3 --gradient_checkpointing"
        ),
    )
    add_settings(finetune, FinetuneConfig())
    finetune.set_defaults(func=run_finetune)

    plan = actions.add_parser(
        "plan",
        help="what fits where: ZeRO stage x offload x LoRA, per-GPU and per-node memory",
        description=(
            "Estimate per-GPU and per-node CPU memory of every fine-tuning strategy with "
            "DeepSpeed's ZeRO estimators plus activations and logits, and pick the fastest "
            "that fits. Example: acepilot train plan --model 6B --gpus 4 --gpu-mem 32GB"
        ),
    )
    plan.add_argument("--model", required=True, help="350M, 2B (2.7B), 6B, 16B or a checkpoint dir")
    plan.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    plan.add_argument("--gpu-mem", default="32GB", help="memory of one GPU (default 32GB)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    plan.add_argument(
        "--seq-len", type=int, default=1024, help="tokens per sequence (default 1024)"
    )
    plan.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step")
    plan.add_argument(
        "--no-checkpointing",
        action="store_true",
        help="without activation checkpointing (keeps every layer's activations)",
    )
    plan.add_argument("--cpu-mem", help="CPU memory of one node; offload must fit in it too")
    plan.add_argument(
        "--reserve", default="0.5GB", help="per GPU for the CUDA context and fragmentation"
    )
    plan.add_argument(
        "--lora", choices=("any", "yes", "no"), default="any", help="only LoRA, or only full"
    )
    plan.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default 8)")
    plan.add_argument("--json", action="store_true", help="print the rows as JSON")
    plan.set_defaults(func=run_plan)


def run_corpus(args: argparse.Namespace) -> int:
    from acepilot.training.config import configure, settings_from
    from acepilot.training.corpus.build import CorpusConfig, build_corpus

    config = configure(CorpusConfig(), settings_from(args, CorpusConfig()))
    out = build_corpus(config)
    print(out)
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from acepilot.training.config import configure, settings_from
    from acepilot.training.finetune.launch import launch
    from acepilot.training.finetune.train import FinetuneConfig, check

    config = configure(FinetuneConfig(), settings_from(args, FinetuneConfig()))
    check(config)
    return launch(config)


def run_plan(args: argparse.Namespace) -> int:
    import json

    from acepilot.training import plan

    shape = plan.model_shape(args.model, args.lora_r)
    gpu_mem = plan.parse_mem(args.gpu_mem)
    rows = plan.plan(
        shape,
        args.gpus,
        gpu_mem,
        nodes=args.nodes,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        checkpointing=not args.no_checkpointing,
        reserve_gib=plan.parse_mem(args.reserve),
        cpu_mem_gib=plan.parse_mem(args.cpu_mem) if args.cpu_mem else None,
        lora={"any": None, "yes": True, "no": False}[args.lora],
    )
    if args.json:
        chosen = plan.pick(rows)
        print(
            json.dumps(
                {
                    "model": shape.name,
                    "params": shape.params,
                    "rows": [
                        {
                            "strategy": r.strategy.name,
                            "zero_stage": r.strategy.stage,
                            "offload_optimizer": r.strategy.offload_optimizer,
                            "offload_params": r.strategy.offload_params,
                            "lora": r.strategy.lora,
                            "states_gib": round(r.states_gib, 2),
                            "activations_gib": round(r.activations_gib, 2),
                            "gpu_gib": round(r.gpu_gib, 2),
                            "cpu_gib_per_node": round(r.cpu_gib, 2),
                            "fits": r.fits,
                        }
                        for r in rows
                    ],
                    "pick": chosen.strategy.name if chosen else None,
                },
                indent=2,
            )
        )
    else:
        print(plan.format_table(shape, rows, args.gpus, args.nodes, gpu_mem))
    return 0 if plan.pick(rows) else 1
