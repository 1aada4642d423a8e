"""`acepilot pipeline CONFIG`: corpus -> fine-tune -> build -> evaluate -> gate -> promote."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="corpus, fine-tune, build, evaluate, gate and promote in one resumable run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the whole path from a team's repositories to a production model, each stage "
            "the same code as its own command. Finished stages leave a marker in "
            "work_dir/stages/ and are skipped when the command runs again, so an interrupted "
            "run resumes; a rejected candidate stops before promotion (exit 2) with the gate "
            "report. Settings: config files (plain assignments; see docs/evaluation.md) then "
            "--key=value overrides.\n\n"
            "example:\n  acepilot pipeline team_pipeline.py --work_dir=runs/2026-11"
        ),
    )
    from acepilot.training.config import add_settings
    from acepilot.training.pipeline import STAGES, PipelineConfig

    add_settings(parser, PipelineConfig())
    parser.add_argument(
        "--restart-from",
        choices=STAGES,
        help="forget this stage's marker and the later ones, and run them again",
    )
    parser.set_defaults(func=run_pipeline)


def run_pipeline(args: argparse.Namespace) -> int:
    import json

    from acepilot.training.config import ConfigError, configure, settings_from
    from acepilot.training.pipeline import Pipeline, PipelineConfig, PipelineError

    try:
        config = configure(PipelineConfig(), settings_from(args, PipelineConfig()))
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None
    outputs = Pipeline(config).run(args.restart_from)
    print(json.dumps(outputs["promote"], indent=2))
    return 0
