"""The team server: one machine serves completions to a whole team (docs/team-server.md).

- `app`: the Starlette application (OpenAI completions API, health, metrics, telemetry).
- `schema`: the request bodies (pydantic), checked in one place; `openapi`: their description.
- `errors`: OpenAI-style JSON errors.
- `prompts`: prompt text to token ids, bounded before the work starts.
- `completion`: one generation between the scheduler thread and its HTTP response.
- `models`: the served model, following the registry's production pointer (hot swap).
- `connections`: connection limit and request-head deadline (uvicorn's h11 protocol).
- `logs`: rate-limited logging; `labels`: bounded language labels.
- `tokens`: bearer tokens in SQLite, stored as sha256 hashes only.
- `metrics`: a small Prometheus text-format registry (no code content in it).
- `limits`: request limits and per-token rate limiting.
"""
