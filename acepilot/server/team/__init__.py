"""The team server: one machine serves completions to a whole team (docs/team-server.md).

- `tokens`: bearer tokens in SQLite, stored as sha256 hashes only.
- `metrics`: a small Prometheus text-format registry (no code content in it).
- `limits`: per-token rate limiting.
- `models`: the served model, following the registry's production pointer (hot swap).
- `app`: the Starlette application (OpenAI completions API, health, metrics, telemetry).
"""
