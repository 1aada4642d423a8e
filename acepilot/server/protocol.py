"""Acepilot's wire names: the LSP extensions, the command, the settings.

One place for every name a client, a test or a benchmark must spell the same
way as the server. The VS Code extension declares the same names in
extension/src/protocol.ts; tests/extension/test_protocol_constants.py checks
that the two agree (and that no other extension file spells them itself).

Methods and notifications (LSP custom methods, `acepilot/...`):

    STATUS     server -> client notification: state, model, latencies
    RESYNC     server -> client notification: send the full text of {uri}
    STATS      client -> server request: the counters (acepilot/server/lsp/stats.py)
    TELEMETRY  client -> server notification: a completion was shown/accepted/rejected

Every inline completion item carries ACCEPTED_COMMAND: the client runs it when
the user accepts the item and turns it into a TELEMETRY `accepted` event.
"""

from __future__ import annotations

SECTION = "acepilot"  # the settings section (workspace/configuration, initializationOptions)

STATUS = "acepilot/status"
RESYNC = "acepilot/resync"
STATS = "acepilot/stats"
TELEMETRY = "acepilot/telemetry"
ACCEPTED_COMMAND = "acepilot.accepted"

METHODS = (STATUS, RESYNC, STATS, TELEMETRY)

# STATUS `state` values.
STATE_LOADING = "loading"
STATE_READY = "ready"
STATE_ERROR = "error"
STATES = (STATE_LOADING, STATE_READY, STATE_ERROR)

# TELEMETRY event kinds.
EVENT_KINDS = ("shown", "accepted", "rejected")

# The server's setting keys (camelCase, as sent by clients; acepilot/server/lsp/config.py
# validates each). `remote` may also come nested: {"remote": {"url", "token", "model", "fim"}}.
SETTINGS = (
    "enable",
    "model",
    "registry",
    "backend",
    "remoteUrl",
    "remoteToken",
    "remoteModel",
    "remoteFim",
    "telemetry",
    "kvReuse",
    "maxNewTokens",
    "temperature",
    "topP",
    "contextTokens",
    "snippetTokens",
    "workspaceContext",
    "workspaceContextTokens",
    "idlePrefillMs",
    "maxLines",
    "debounceMs",
    "timeoutMs",
    "threads",
    "languages",
)
