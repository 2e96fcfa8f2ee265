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
MAX_METADATA_BYTES = 16_384
MAX_TEXT_CHARS = 2_000_000
MAX_OUTCOMES_PER_REQUEST = 1000


def _check_json(value: Any, path: str = "") -> None:
    """Raise ValueError for what JSON cannot carry to every backend: NaN/Infinity (PostgreSQL's
    json type rejects them) and NUL characters (PostgreSQL text rejects them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'}: NaN and Infinity are not valid JSON numbers")
    if isinstance(value, str):
        _check_text(value, path or "value")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, path)
            _check_json(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")


def _clean_json(value: Any) -> Any:
    _check_json(value)
    return value


def _check_text(value: str, where: str) -> None:
    """NUL (PostgreSQL text refuses it) and lone surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        raise ValueError(f"{where}: NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}: not valid Unicode text (lone surrogate)") from exc


def _no_nul(value: str) -> str:
    _check_text(value, "text")
    return value


def _small_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        _check_json(value)
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


CleanJSON = Annotated[Any, AfterValidator(_clean_json)]
Text = Annotated[str, AfterValidator(_no_nul)]


class Message(BaseModel):
    """A chat message; ``content`` is a string or a list of content parts (objects; a part's
    ``text``, when present, is a string)."""

    model_config = ConfigDict(extra="allow")

    role: Text = Field(min_length=1, max_length=32)
    content: str | list[dict[str, CleanJSON]] | None = Field(
        default=None, union_mode="left_to_right"
    )

    @field_validator("content")
    @classmethod
    def _content(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(v, str):
            if len(v) > MAX_TEXT_CHARS:
                raise ValueError(f"at most {MAX_TEXT_CHARS} characters")
            return _no_nul(v)
        for part in v or ():
            if "text" in part and not isinstance(part["text"], str):
                raise ValueError("a content part's text must be a string")
        return v

    @model_validator(mode="after")
    def _extras(self) -> Message:
        _check_json(self.model_extra or {})
        return self


class RouteRequest(BaseModel):
    """``POST /v1/route``. Give ``input_tokens`` or ``messages`` (then tokens are estimated)."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=200, pattern=TASK_TYPE_PATTERN)
    input_tokens: int | None = Field(default=None, ge=0, le=10_000_000, strict=True)
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=1000)
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
    item_id: str | None = Field(
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

    decision_id: str = Field(min_length=1, max_length=64)
    served_model: Text = Field(min_length=1, max_length=128)
    status: Literal["ok", "error", "timeout", "refused"] = "ok"
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)
    usage: Annotated[dict[str, Any] | None, AfterValidator(_small_json)] = Field(
        default=None, description="the provider's usage object; null = not reported (unpriced)"
    )
    input_messages: list[Message] | None = Field(default=None, max_length=1000)
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
