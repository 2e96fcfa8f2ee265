"""API schemas of the data plane (never table objects)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

TASK_TYPE_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""Names read from a URL or stored as keys (task classes, models): no control characters."""

# Limits on every input (the whole body is limited too: tierwise.limits, 8 MiB by default).
MAX_METADATA_BYTES = 16_384
MAX_TEXT_CHARS = 2_000_000
"""One text: a message's content, a content part's text, an answer, any string in free JSON."""
MAX_OUTCOMES_PER_REQUEST = 1000
MAX_MESSAGES = 1000
"""Messages of one request (route, outcome, gateway call)."""
MAX_CONTENT_PARTS = 500
"""Content parts of one message."""
MAX_TOOLS = 128
"""Tools of one gateway call (OpenAI's own limit, API reference "Create chat completion")."""
MAX_JSON_DEPTH = 32
"""Nesting of free-form JSON (metadata, usage, content parts, a message's other fields, a
gateway body): an object or list inside 32 others is refused."""
MAX_JSON_ITEMS = 10_000
"""Elements of one list, or members of one object, in free-form JSON."""


class JSONLimitError(ValueError):
    """A JSON value past a limit or not storable; ``path`` is where (``a.b[2]``, "" = the
    value itself)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'value'}: {message}")
        self.path = path
        self.reason = message


def check_json(value: Any, path: str = "", *, depth: int = 1, text: bool = True) -> None:
    """Check a decoded JSON value against the limits (:data:`MAX_JSON_DEPTH`,
    :data:`MAX_JSON_ITEMS`, :data:`MAX_TEXT_CHARS` per string) and, with ``text``, what JSON
    cannot carry to every backend: NaN/Infinity (PostgreSQL's json type rejects them) and NUL
    characters or lone surrogates (PostgreSQL text rejects them). ``depth`` is the nesting of
    ``value`` itself (1 = top level).

    Raises:
        JSONLimitError: the first problem met, with its path.
    """
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            raise JSONLimitError(path, f"at most {MAX_TEXT_CHARS} characters")
        if text:
            _check_text(value, path or "value")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JSONLimitError(path, "NaN and Infinity are not valid JSON numbers")
        return
    if not isinstance(value, dict | list):
        return
    if depth > MAX_JSON_DEPTH:
        raise JSONLimitError(path, f"nests deeper than {MAX_JSON_DEPTH} levels")
    if len(value) > MAX_JSON_ITEMS:
        raise JSONLimitError(path, f"at most {MAX_JSON_ITEMS} items")
    if isinstance(value, dict):
        for key, item in value.items():
            check_json(key, path, depth=depth + 1, text=text)
            check_json(item, f"{path}.{key}" if path else str(key), depth=depth + 1, text=text)
    else:
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]", depth=depth + 1, text=text)


def _check_text(value: str, where: str) -> None:
    """NUL (PostgreSQL text refuses it) and lone surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        raise JSONLimitError(where, "NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JSONLimitError(where, "not valid Unicode text (lone surrogate)") from exc


def _no_nul(value: str) -> str:
    _check_text(value, "text")
    return value


def _small_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        check_json(value)
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class Message(BaseModel):
    """A chat message; ``content`` is a string or a list of content parts (objects; a part's
    ``text``, when present, is a string)."""

    model_config = ConfigDict(extra="allow")

    role: Text = Field(min_length=1, max_length=32)
    content: str | list[dict[str, Any]] | None = Field(
        default=None,
        union_mode="left_to_right",
        description=f"at most {MAX_TEXT_CHARS} characters, or at most {MAX_CONTENT_PARTS} parts",
    )

    @field_validator("content")
    @classmethod
    def _content(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(v, str):
            if len(v) > MAX_TEXT_CHARS:
                raise ValueError(f"at most {MAX_TEXT_CHARS} characters")
            return _no_nul(v)
        if v is not None and len(v) > MAX_CONTENT_PARTS:
            raise ValueError(f"at most {MAX_CONTENT_PARTS} content parts")
        for i, part in enumerate(v or ()):
            check_json(part, f"[{i}]", depth=3)  # a part sits in content, in a message
            if "text" in part and not isinstance(part["text"], str):
                raise ValueError("a content part's text must be a string")
        return v

    @model_validator(mode="after")
    def _extras(self) -> Message:
        check_json(self.model_extra or {}, depth=1)  # the message's other fields, at depth 2
        return self


class RouteRequest(BaseModel):
    """``POST /v1/route``. Give ``input_tokens`` or ``messages`` (then tokens are estimated)."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=200, pattern=TASK_TYPE_PATTERN)
    input_tokens: int | None = Field(default=None, ge=0, le=10_000_000, strict=True)
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=MAX_MESSAGES)
    has_tool_calls: bool = Field(default=False, strict=True)
    metadata: Annotated[dict[str, Any] | None, AfterValidator(_small_json)] = Field(
        default=None, description=f"stored with the decision; at most {MAX_METADATA_BYTES} bytes"
    )
    request_id: str | None = Field(
        default=None,
        min_length=8,
        max_length=48,
        pattern=ID_PATTERN,
        description="Caller's id for this request. The decision id is derived from it and the "
        "request's task type, tokens and tool use, so a retried route call gets the same "
        "decision (and sampling answer). Default: a random id.",
    )
    item_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The held-out item this request replays (tierwise replay and eval runs): "
        "graders that use recorded references look it up. Not part of metadata, which is the "
        "caller's own and never read by the jobs.",
    )


class RouteResponse(BaseModel):
    """The decision (``router.decide.RouteDecision``, read by attribute)."""

    model_config = ConfigDict(from_attributes=True)

    decision_id: str
    task_class: str
    tier: str
    model: str
    provider: str
    table_version: int
    sampled: bool
    reason: str
    input_tokens: int


class OutcomeIn(BaseModel):
    """One outcome report. ``usage`` is the provider's own usage object (OpenAI or Anthropic
    shape). ``input_messages``/``output_text`` are kept only when the decision was sampled."""

    model_config = ConfigDict(extra="forbid")

    decision_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    served_model: Text = Field(min_length=1, max_length=128)
    status: Literal["ok", "error", "timeout", "refused"] = "ok"
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)
    usage: Annotated[dict[str, Any] | None, AfterValidator(_small_json)] = Field(
        default=None, description="the provider's usage object; null = not reported (unpriced)"
    )
    input_messages: list[Message] | None = Field(default=None, max_length=MAX_MESSAGES)
    output_text: Text | None = Field(default=None, max_length=MAX_TEXT_CHARS)


class OutcomeResultOut(BaseModel):
    """What happened to one report (``router.outcomes.OutcomeResult``, read by attribute)."""

    model_config = ConfigDict(from_attributes=True)

    decision_id: str
    stored: bool
    cost_usd: float | None = Field(description="USD; null when the served model is unpriced")
    sample_queued: bool
    note: str | None


class OutcomesResponse(BaseModel):
    stored: int
    duplicates: int
    results: list[OutcomeResultOut]


class RoutingEntryOut(BaseModel):
    task_class: str
    tier: str
    model: str
    provider: str
    status: str
    version: int
    changed_at: str


class UnknownTaskTypeOut(BaseModel):
    """How often this process saw one unknown task type since it started, and what it did:
    ``default`` (routed as the ``default`` class) or ``reject`` (refused)."""

    task_type: str
    action: Literal["default", "reject"]
    count: int


class UnknownTaskTypesOut(BaseModel):
    """The policy's ``unknown_task_types`` and this process's counts (in memory, since start;
    each router replica counts its own)."""

    policy: Literal["default", "reject"]
    routed_as_default: int
    rejected: int
    task_types: list[UnknownTaskTypeOut] = Field(
        description="most frequent first; past 1000 distinct types the rest count as (other)"
    )


class RoutingTableOut(BaseModel):
    table_version: int
    policy: str
    premium_model: str
    entries: list[RoutingEntryOut]
    unknown_task_types: UnknownTaskTypesOut
