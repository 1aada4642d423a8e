"""The team server's request bodies, declared once (pydantic v2) and checked in one place.

`parse(Model, raw, limits)` turns the raw body bytes into a validated model or
an ApiError 400 that names the field at fault. Parsing and validation are one
step in pydantic-core (Rust): the JSON parser bounds nesting depth and number
size, rejects lone UTF-16 surrogates (which no tokenizer accepts), NaN and
Infinity, and nothing of the request is echoed into the message. Limits that
depend on the server's settings (`Limits`) are checked here too, through the
validation context, so a handler receives only requests it can serve.

The same models produce the OpenAPI description served at /openapi.json
(`openapi.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from acepilot.server.team.errors import ApiError, bad
from acepilot.server.team.limits import Limits

MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_USER_CHARS = 256
MAX_TELEMETRY_EVENTS = 1000
LANGUAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+#-]{0,31}$"
TELEMETRY_EVENTS = ("shown", "accepted", "rejected", "retained")
MAX_EVENT_CHARS = 1_000_000  # characters of one completion (far above any max_tokens)
CHECKPOINTS = (30, 120)  # seconds after acceptance when editors re-check (store.CHECKPOINTS)


def _or(default: Any) -> BeforeValidator:
    """JSON null means the default (OpenAI clients send null for unset fields)."""
    return BeforeValidator(lambda value: default if value is None else value)


def _one_string(value: str | list[str] | list[int]) -> str | list[int]:
    """A prompt of a list of one string is that string."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return str(value[0])
    return value  # type: ignore[return-value]


def _stop_list(value: Any) -> Any:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _only(allowed: Any, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and value != allowed:
            raise PydanticCustomError("unsupported", what)
        return value

    return check


StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
_STOP_ONE = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}
STOP_SCHEMA = {
    "anyOf": [
        _STOP_ONE,
        {"type": "array", "items": _STOP_ONE, "maxItems": MAX_STOP},
        {"type": "null"},
    ],
    "description": f"a string or up to {MAX_STOP} strings",
}
Prompt = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=1)]
    | list[Annotated[int, Field(ge=0)]]
)


class Strict(BaseModel):
    """Types as JSON writes them: no "10" for 10, no true for 1, finite numbers only."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(Strict):
    include_usage: bool = False


class CompletionBody(Strict):
    """POST /v1/completions: the OpenAI completions API, one completion per request."""

    model: Annotated[str | None, Field(max_length=256)] = None
    prompt: Annotated[Prompt, AfterValidator(_one_string)] = Field(
        default="",
        description="a string, a list of one string, or a list of token ids",
    )
    suffix: str | None = Field(
        default=None, description="the text after the cursor: fill-in-the-middle models use it"
    )
    max_tokens: Annotated[int, Field(ge=1), _or(16)] = 16
    temperature: Annotated[float, Field(ge=0.0, le=2.0), _or(1.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0), _or(1.0)] = 1.0
    stop: Annotated[
        list[StopString],
        Field(max_length=MAX_STOP),
        BeforeValidator(_stop_list),
        WithJsonSchema(STOP_SCHEMA),
    ] = Field(default_factory=list)
    stream: Annotated[bool, _or(False)] = False
    stream_options: StreamOptions | None = None
    n: Annotated[int | None, AfterValidator(_only(1, "only 1"))] = None
    best_of: Annotated[int | None, AfterValidator(_only(1, "only 1"))] = None
    echo: Annotated[bool | None, AfterValidator(_only(False, "not supported"))] = None
    logprobs: Annotated[int | None, AfterValidator(_only(0, "not supported"))] = None
    presence_penalty: Annotated[float | None, AfterValidator(_only(0, "only 0"))] = None
    frequency_penalty: Annotated[float | None, AfterValidator(_only(0, "only 0"))] = None
    logit_bias: Annotated[dict[str, float] | None, AfterValidator(_only({}, "not supported"))] = (
        None
    )
    seed: Annotated[int, Field(ge=0)] | None = None
    user: Annotated[str, Field(max_length=MAX_USER_CHARS), _or("")] = Field(
        default="", description="a separate KV cache per (token, user), e.g. per editor window"
    )

    @field_validator("max_tokens")
    @classmethod
    def _server_max_tokens(cls, value: int, info: ValidationInfo) -> int:
        limits = info.context
        if isinstance(limits, Limits) and value > limits.max_tokens:
            raise PydanticCustomError(
                "server_limit",
                "'max_tokens' is {value}; this server allows at most {limit}",
                {"value": value, "limit": limits.max_tokens},
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _server_prompt_ids(cls, value: str | list[int], info: ValidationInfo) -> str | list[int]:
        limits = info.context
        bound = limits.max_prompt_tokens if isinstance(limits, Limits) else None
        if bound is not None and isinstance(value, list) and len(value) > bound:
            raise PydanticCustomError(
                "server_limit",
                "the prompt has {count} tokens; this server allows at most {limit}",
                {"count": len(value), "limit": bound},
            )
        return value

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


Chars = Annotated[int, Field(ge=0, le=MAX_EVENT_CHARS)]


class TelemetryEvent(Strict):
    """One editor report; counts and sizes only, never text.

    `accepted` may say how many characters were inserted (`chars`); `retained`
    says, for an accepted completion re-checked `after_s` seconds later, how
    many of its `chars` characters are still there (`retained_chars`)."""

    event: Literal["shown", "accepted", "rejected", "retained"]
    language: Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)] = Field(
        description="an LSP language id"
    )
    chars: Chars | None = Field(
        default=None, description="accepted/retained: characters the completion inserted"
    )
    after_s: Literal[30, 120] | None = Field(
        default=None, description="retained: seconds after acceptance"
    )
    retained_chars: Chars | None = Field(
        default=None, description="retained: of `chars`, how many are still in the document"
    )

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> TelemetryEvent:
        if self.event == "retained":
            if self.after_s is None or self.chars is None or self.retained_chars is None:
                raise PydanticCustomError(
                    "telemetry_event", "a retained event needs after_s, chars and retained_chars"
                )
            if self.retained_chars > self.chars:
                raise PydanticCustomError("telemetry_event", "retained_chars cannot exceed chars")
        elif self.after_s is not None or self.retained_chars is not None:
            raise PydanticCustomError(
                "telemetry_event", "after_s and retained_chars belong to retained events only"
            )
        elif self.chars is not None and self.event != "accepted":
            raise PydanticCustomError("telemetry_event", "chars belongs to accepted and retained")
        return self


class TelemetryBody(Strict):
    """POST /v1/telemetry: what editors report about the completions they showed."""

    events: Annotated[list[TelemetryEvent], Field(max_length=MAX_TELEMETRY_EVENTS)]


# What to tell a client whose field has the wrong type or range (pydantic's own
# wording is kept after it for the detail).
HELP = {
    "model": "'model' must be a string",
    "prompt": "'prompt' must be a string, a list of one string, or a list of token ids",
    "suffix": "'suffix' must be a string or null",
    "max_tokens": "'max_tokens' must be a positive integer",
    "temperature": "'temperature' must be a number between 0 and 2",
    "top_p": "'top_p' must be a number in (0, 1]",
    "stop": f"'stop' takes at most {MAX_STOP} non-empty strings of up to {MAX_STOP_CHARS} characters",
    "stream": "'stream' must be true or false",
    "stream_options": "'stream_options' must be an object such as {\"include_usage\": true}",
    "n": "'n' must be 1: this server returns one completion per request",
    "best_of": "'best_of' must be 1: this server returns one completion per request",
    "echo": "'echo' is not supported",
    "logprobs": "'logprobs' is not supported",
    "presence_penalty": "'presence_penalty' is not supported (only 0)",
    "frequency_penalty": "'frequency_penalty' is not supported (only 0)",
    "logit_bias": "'logit_bias' is not supported",
    "seed": "'seed' must be a non-negative integer",
    "user": f"'user' must be a string of at most {MAX_USER_CHARS} characters",
    "events": 'the body must be {"events": [...]} with at most '
    f"{MAX_TELEMETRY_EVENTS} events, each "
    f'{{"event": {" | ".join(TELEMETRY_EVENTS)}, "language": a language id}}, '
    'plus "chars" (accepted, retained) and "after_s" (30 or 120) and "retained_chars" '
    "(retained)",
}

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], raw: bytes, limits: Limits | None = None) -> M:
    """The body as `model`, or ApiError 400 naming the first field at fault."""
    try:  # a UTF-8 byte order mark is tolerated, as RFC 8259 allows (and json.loads did)
        return model.model_validate_json(raw.removeprefix(b"\xef\xbb\xbf"), context=limits)
    except ValidationError as exc:
        raise error_of(exc) from None


def error_of(exc: ValidationError) -> ApiError:
    """The client's view of a validation error: which field, what is expected."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    kind, loc, detail = first["type"], first["loc"], first["msg"]
    if kind == "json_invalid":
        return bad(f"the request body is not valid JSON ({detail.removeprefix('Invalid JSON: ')})")
    if not loc:
        return bad("the request body must be a JSON object")
    field = str(loc[0])
    if kind == "server_limit":
        return bad(detail, field)
    if kind == "telemetry_event":
        where = "".join(f"[{part}]" if isinstance(part, int) else str(part) for part in loc)
        return bad(f"{where}: {detail}", field)
    where = str(loc[0]) + "".join(f"[{part}]" if isinstance(part, int) else "" for part in loc[1:])
    event_fields = ("event", "language", "chars", "after_s", "retained_chars")
    named = [part for part in loc[1:] if isinstance(part, str) and part in event_fields]
    if named:
        where += "." + named[0]
    help_text = HELP.get(field)
    if help_text is None:
        return bad(f"{where}: {detail}", field)
    return bad(f"{help_text} ({where}: {detail})", field)
