"""The OpenAPI 3.1 description of the team server, served at GET /openapi.json.

Request bodies come from the pydantic models that validate them (schema.py),
so the description cannot drift from what the server accepts; the rest (paths,
statuses, the error body) is written here once.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from acepilot.server import __version__
from acepilot.server.team.schema import CompletionBody, TelemetryBody

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type"],
        }
    },
}

ERRORS = {
    "400": "malformed request, a field of the wrong type or range (`param` names it), a prompt over the limits",
    "401": "missing, unknown or revoked token",
    "408": "the body did not arrive within the client timeout",
    "413": "body over the size limit",
    "429": "the token's rate limit, or too many of its prompts being prepared (Retry-After)",
    "503": "queue full, deadline passed while queued, or no model loaded yet (Retry-After)",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: _json({"$ref": "#/components/schemas/Error"}, ERRORS[status]) for status in statuses
    }


def openapi_document() -> dict[str, Any]:
    """The whole description (a plain dict, ready for JSON)."""
    refs, top = models_json_schema(
        [(CompletionBody, "validation"), (TelemetryBody, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas = {**top.get("$defs", {}), "Error": ERROR}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    completion_ref = refs[(CompletionBody, "validation")]
    telemetry_ref = refs[(TelemetryBody, "validation")]
    text = {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Acepilot team server",
            "version": __version__,
            "description": "OpenAI-compatible code completions (docs/team-server.md).",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/completions": {
                "post": {
                    "summary": "A completion (server-sent events when stream is true)",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": completion_ref}},
                    },
                    "responses": {
                        "200": {
                            "description": "an OpenAI text_completion object, or a stream of them",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        "404": _json({"$ref": "#/components/schemas/Error"}, "another model name"),
                        **_errors("400", "401", "408", "413", "429", "503"),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The served model (acepilot: fim, fim_order, family, version)",
                    "security": bearer,
                    "responses": {
                        "200": _json({"type": "object"}, "an OpenAI model list"),
                        **_errors("401"),
                    },
                }
            },
            "/v1/telemetry": {
                "post": {
                    "summary": "Shown, accepted and rejected completions per language",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": telemetry_ref}},
                    },
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"received": {"type": "integer"}}},
                            "the number of events counted",
                        ),
                        **_errors("400", "401", "408", "413"),
                    },
                }
            },
            "/healthz": {"get": {"summary": "The process answers", "responses": {"200": text}}},
            "/readyz": {
                "get": {
                    "summary": "A model is loaded (503 before)",
                    "responses": {"200": _json({"type": "object"}, "ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text format (needs the metrics token when one is set)",
                    "responses": {"200": text},
                }
            },
        },
    }
