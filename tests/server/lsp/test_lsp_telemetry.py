"""Acceptance telemetry: ids in the items' command, `acepilot/telemetry` events, forwarding.

The protocol agreed with the VS Code extension (docs/lsp.md): each item's
command is `acepilot.accepted` with `{id, languageId}`; the client notifies
`{event: shown|accepted|rejected, id, languageId}`, and for an accepted item
checked again later `{event: retained, id, languageId, afterS: 30|120,
retainedChars}`. Bad events are ignored, never fatal; with the remote backend
the counts (never code) are POSTed to {base}/v1/telemetry in batches, an
accepted or retained event with the completion's size as the server counted it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import (
    get_stats,
    inline,
    items_of,
    open_doc,
    raw_notify,
    remote_options,
    running_server,
)

from acepilot.server.protocol import ACCEPTED_COMMAND, TELEMETRY

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cr3t_code_value"


def event(kind: str, completion_id: Any, language: Any = "python") -> dict[str, Any]:
    return {"event": kind, "id": completion_id, "languageId": language}


async def test_items_carry_the_accept_command_and_events_count(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: "compute()"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "a.py").as_uri()
        open_doc(client, uri, "x = \ny = \n")
        first = items_of(await inline(client, uri, 0, 4))[0]
        second = items_of(await inline(client, uri, 1, 4))[0]
        assert first.command is not None and first.command.command == ACCEPTED_COMMAND
        assert first.command.title == "Acepilot: accepted"
        (argument,) = first.command.arguments or []
        assert argument["languageId"] == "python"
        first_id = argument["id"]
        second_id = (second.command.arguments or [])[0]["id"] if second.command else None
        assert isinstance(first_id, str) and first_id != second_id

        client.protocol.notify(TELEMETRY, event("shown", first_id))
        client.protocol.notify(TELEMETRY, event("accepted", first_id))
        client.protocol.notify(TELEMETRY, event("shown", second_id))
        client.protocol.notify(TELEMETRY, event("rejected", second_id))
        # ignored: repeated events, unknown ids, malformed params
        client.protocol.notify(TELEMETRY, event("accepted", first_id))
        client.protocol.notify(TELEMETRY, event("accepted", "not-an-issued-id"))
        for bad in (
            None,
            [],
            "accepted",
            {"event": "clicked", "id": first_id, "languageId": "python"},
            {"event": "accepted", "id": 5, "languageId": "python"},
            {"event": "accepted", "id": first_id},
            {"event": "accepted", "id": "x" * 10_000, "languageId": "python"},
            {"event": "accepted", "id": first_id, "languageId": {"x": 1}},
        ):
            raw_notify(client, TELEMETRY, bad)
        stats = await get_stats(client)
        completions = stats["completions"]
        assert {k: completions[k] for k in ("shown", "accepted", "rejected")} == {
            "shown": 2,
            "accepted": 1,
            "rejected": 1,
        }
        assert completions["by_language"] == {"python": {"shown": 2, "accepted": 1, "rejected": 1}}
        # still serving
        assert items_of(await inline(client, uri, 0, 4))


async def wait_for(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_counts_forwarded_to_the_team_server(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: f"{SECRET}_x"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "secret.py").as_uri()
        open_doc(client, uri, f"token = '{SECRET}'\nx = \n")
        ids = []
        for _ in range(51):  # the same position: the cache answers, each with a new id
            item = items_of(await inline(client, uri, 1, 4))[0]
            ids.append((item.command.arguments or [])[0]["id"] if item.command else None)
        text = str(item.insert_text)
        assert len(set(ids)) == 51
        for completion_id in ids[:50]:
            client.protocol.notify(TELEMETRY, event("shown", completion_id))
        await wait_for(lambda: stub.telemetry)  # a full batch goes at once
        assert len(stub.telemetry) == 1
        assert stub.telemetry[0] == {"events": [{"event": "shown", "language": "python"}] * 50}
        assert stub.telemetry_headers[0]["Authorization"] == "Bearer test-token"
        client.protocol.notify(TELEMETRY, event("accepted", ids[50]))
        await asyncio.sleep(0.3)
        assert len(stub.telemetry) == 1  # one event waits for the interval or shutdown
    # the shutdown sent what was queued
    accepted = {"event": "accepted", "language": "python", "chars": len(text)}
    assert stub.telemetry[1:] == [{"events": [accepted]}]
    assert SECRET not in json.dumps(stub.telemetry)


async def test_retention_checks_are_forwarded_as_counts(stub: Any, tmp_path: Path) -> None:
    stub.reply = lambda body: f"{SECRET}()"
    async with running_server("visual_studio_code", remote_options(stub), tmp_path) as (
        client,
        _,
        _,
    ):
        uri = (tmp_path / "kept.py").as_uri()
        open_doc(client, uri, "x = \ny = \n")
        accepted_item = items_of(await inline(client, uri, 0, 4))[0]
        other_item = items_of(await inline(client, uri, 1, 4))[0]
        first = (accepted_item.command.arguments or [])[0]["id"] if accepted_item.command else None
        other = (other_item.command.arguments or [])[0]["id"] if other_item.command else None
        size = len(str(accepted_item.insert_text))

        def retained(completion_id: Any, after: Any, chars: Any) -> dict[str, Any]:
            return {**event("retained", completion_id), "afterS": after, "retainedChars": chars}

        raw_notify(client, TELEMETRY, retained(first, 30, 3))  # not accepted yet: ignored
        client.protocol.notify(TELEMETRY, event("accepted", first))
        raw_notify(client, TELEMETRY, retained(first, 30, 3))
        raw_notify(client, TELEMETRY, retained(first, 30, 2))  # the same checkpoint again
        raw_notify(client, TELEMETRY, retained(first, 120, 10_000))  # more than was inserted
        raw_notify(client, TELEMETRY, retained(other, 30, 1))  # never accepted
        for bad in (
            retained(first, 60, 1),
            retained(first, "30", 1),
            retained(first, True, 1),
            retained(first, 30, -1),
            retained(first, 30, 1.5),
            retained(first, 30, "all"),
            {**event("retained", first), "afterS": 30},
        ):
            raw_notify(client, TELEMETRY, bad)
        stats = await get_stats(client)
        assert stats["completions"]["accepted"] == 1
    events = [item for body in stub.telemetry for item in body["events"]]
    assert events == [
        {"event": "accepted", "language": "python", "chars": size},
        {
            "event": "retained",
            "language": "python",
            "chars": size,
            "after_s": 30,
            "retained_chars": 3,
        },
        {
            "event": "retained",
            "language": "python",
            "chars": size,
            "after_s": 120,
            "retained_chars": size,
        },
    ]
    assert SECRET not in json.dumps(stub.telemetry)


async def test_telemetry_setting_off_sends_nothing(stub: Any, tmp_path: Path) -> None:
    options = remote_options(stub, telemetry=False)
    async with running_server("visual_studio_code", options, tmp_path) as (client, _, _):
        uri = (tmp_path / "b.py").as_uri()
        open_doc(client, uri, "x = \n")
        item = items_of(await inline(client, uri, 0, 4))[0]
        completion_id = (item.command.arguments or [])[0]["id"] if item.command else None
        client.protocol.notify(TELEMETRY, event("accepted", completion_id))
        stats = await get_stats(client)
        assert stats["completions"]["accepted"] == 1  # counted locally
    assert stub.telemetry == []
