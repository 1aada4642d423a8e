"""`acepilot eval completion`: the command line.

The end-to-end run through a built model (`acepilot eval completion` and the
bootstrap's evaluation) is in tests/training/test_bootstrap.py, on the small acepilot-tiny.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from acepilot.training.eval import line_completion as lc


def test_eval_completion_parser() -> None:
    parser = argparse.ArgumentParser()
    lc.add_parser(parser.add_subparsers())
    args = parser.parse_args(["completion", "acepilot-tiny", "src", "-n", "50", "--seed", "7"])
    assert args.model == "acepilot-tiny" and args.paths == [Path("src")]
    assert args.positions == 50 and args.seed == 7 and args.func is lc.run_completion_eval
