"""API schemas of the data plane (never table objects)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TASK_TYPE_PATTERN = r"^[A-Za-z0-9_.:\-]+$"


class Message(BaseModel):
    """A chat message; ``content`` is a string or a list of content parts with ``text``."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=32)
    content: str | list[dict[str, Any]] | None = None


class RouteRequest(BaseModel):
    """``POST /v1/route``. Give ``input_tokens`` or ``messages`` (then tokens are estimated)."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=200, pattern=TASK_TYPE_PATTERN)
    input_tokens: int | None = Field(default=None, ge=0, le=10_000_000)
    messages: list[Message] | None = Field(default=None, min_length=1)
    has_tool_calls: bool = False
    metadata: dict[str, Any] | None = None
    request_id: str | None = Field(
        default=None,
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="Caller's unique id for this request; becomes the decision id, so a retried "
        "route call gets the same sampling answer. Default: a random UUID.",
    )


class RouteResponse(BaseModel):
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
    served_model: str = Field(min_length=1, max_length=128)
    status: Literal["ok", "error", "timeout", "refused"] = "ok"
    latency_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    usage: dict[str, Any] | None = None
    input_messages: list[Message] | None = None
    output_text: str | None = None


class OutcomeResultOut(BaseModel):
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


class RoutingTableOut(BaseModel):
    table_version: int
    policy: str
    premium_model: str
    entries: list[RoutingEntryOut]
