"""The extension's own logic under Node's test runner (`npm test`): settings mapping,
status state machine, the Python/acepilot check against real interpreters."""

from __future__ import annotations

import re
from pathlib import Path

from node_tools import ROOT, run_logged


def test_node_unit_tests(node_modules: Path) -> None:
    output = run_logged(["npm", "test"], ROOT, 300)
    passed = re.search(r"ℹ pass (\d+)", output)
    failed = re.search(r"ℹ fail (\d+)", output)
    assert passed is not None and failed is not None, output[-2000:]
    assert int(failed.group(1)) == 0, output[-4000:]
    assert int(passed.group(1)) >= 15, output[-2000:]
