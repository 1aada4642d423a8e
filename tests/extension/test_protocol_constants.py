"""The extension's wire names (extension/src/protocol.ts) are the server's (acepilot/server/protocol.py).

Also: no other TypeScript file of the extension spells an `acepilot/...`
method itself (it imports them from protocol.ts), and every setting the
extension sends is one the server knows.
"""

from __future__ import annotations

import re
from pathlib import Path

from acepilot.server import protocol

SOURCE = Path(__file__).resolve().parents[2] / "extension" / "src"
CONSTANT = re.compile(r'^export const (\w+) = "([^"]*)";', re.MULTILINE)


def test_protocol_ts_matches_the_server() -> None:
    declared = dict(CONSTANT.findall((SOURCE / "protocol.ts").read_text("utf-8")))
    assert declared, "no constants found in protocol.ts"
    for name, value in declared.items():
        assert getattr(protocol, name) == value, name
    for method in protocol.METHODS:
        assert method in declared.values(), f"{method} is missing from protocol.ts"
    assert declared["ACCEPTED_COMMAND"] == protocol.ACCEPTED_COMMAND


def test_no_other_extension_file_spells_a_method() -> None:
    for path in SOURCE.glob("*.ts"):
        if path.name == "protocol.ts":
            continue
        code = "\n".join(
            line
            for line in path.read_text("utf-8").splitlines()
            if not line.lstrip().startswith(("*", "/"))
        )
        assert not re.search(r'["\'`]acepilot/', code), f"{path.name} spells a method itself"
        assert f'"{protocol.ACCEPTED_COMMAND}"' not in code, path.name


def test_the_settings_the_extension_sends_are_the_servers() -> None:
    config = (SOURCE / "config.ts").read_text("utf-8")
    interface = re.search(r"export interface ServerSettings \{(.*?)\}", config, re.DOTALL)
    assert interface is not None
    keys = re.findall(r"^\s*(\w+):", interface.group(1), re.MULTILINE)
    assert keys and set(keys) <= set(protocol.SETTINGS)


def test_the_servers_settings_table_is_the_protocols() -> None:
    from acepilot.server.lsp.config import CHECKS

    assert set(CHECKS) == set(protocol.SETTINGS)
