"""Tables owned by the data plane (``table=True``): catalog, policy, routing table, decisions,
outcomes and the samples queued for grading. API schemas live in ``router.schemas``.

Prices are USD per 1M tokens (``*_usd_per_mtok``); costs are USD; latencies ms; timestamps UTC.
JSON columns are ``router.db.JSONDict`` / ``JSONList``: a change to the value's top level in place
(``row.meta["k"] = v``) is saved on commit; dicts and lists nested inside are read-only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from router.db import JSONDict, JSONList, JSONTrackingModel, UTCDateTime, utcnow


def _ts(*, index: bool = False) -> Any:
    """A non-null UTC timestamp column defaulting to now."""
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)


class Model(JSONTrackingModel, table=True):
    """Model catalog row: one priced model. Prices are USD per 1M tokens.

    ``api_model`` is the id sent to the provider (NULL = ``name``); ``aliases`` the other names
    the provider reports for it (``router.policy.ModelPrice``).

    ``cached_input_usd_per_mtok`` / ``cache_write_usd_per_mtok`` default to the input price when
    NULL. ``batch_discount`` is the fraction taken off by the provider's batch API (0.5 for OpenAI
    Batch and Anthropic Message Batches, per their pricing pages).
    """

    __tablename__ = "model"
    __table_args__ = (
        sa.CheckConstraint("input_usd_per_mtok >= 0", name="ck_model_input_price"),
        sa.CheckConstraint("output_usd_per_mtok >= 0", name="ck_model_output_price"),
        sa.CheckConstraint("batch_discount >= 0 AND batch_discount < 1", name="ck_model_batch"),
    )

    name: str = Field(primary_key=True, max_length=128)
    provider: str = Field(max_length=64)
    api_model: str | None = Field(default=None, max_length=128)
    aliases: list[str] = Field(default_factory=list, sa_type=JSONList)
    input_usd_per_mtok: float
    cached_input_usd_per_mtok: float | None = None
    cache_write_usd_per_mtok: float | None = None
    output_usd_per_mtok: float
    batch_discount: float = 0.5
    updated_at: datetime = _ts()


class ApiKey(JSONTrackingModel, table=True):
    """A caller's API key. The key itself (``tw-<id>-<secret>``) is shown once at creation;
    only the SHA-256 of it is stored. ``scopes`` is a list of ``route``, ``outcomes``,
    ``read-samples``, ``admin``; a revoked key keeps its row (costs stay attributable)."""

    __tablename__ = "api_key"
    __table_args__ = (sa.UniqueConstraint("name", name="uq_api_key_name"),)

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    secret_hash: str = Field(max_length=64)
    scopes: list[str] = Field(default_factory=list, sa_type=JSONList)
    created_at: datetime = _ts()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class Policy(SQLModel, table=True):
    """Every routing policy ever applied, newest last; the body is the policy file's TOML text."""

    __tablename__ = "policy"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    body: str = Field(sa_type=sa.Text)
    table_version: int
    applied_at: datetime = _ts()


class RoutingState(SQLModel, table=True):
    """Single row (id = 1) holding the routing table version; every table change bumps it."""

    __tablename__ = "routing_state"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
    updated_at: datetime = _ts()


class RoutingEntry(SQLModel, table=True):
    """One task class in the routing table: its current model, tier and status.

    ``version`` is the table version at which the entry last changed; ``changed_at`` starts the
    window over which the class's disagreement rate is measured.
    """

    __tablename__ = "routing_entry"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('baseline', 'escalated', 'probation', 'pinned')", name="ck_entry_status"
        ),
    )

    task_class: str = Field(primary_key=True, max_length=200)
    tier: str = Field(max_length=32)
    model: str = Field(foreign_key="model.name", max_length=128)
    status: str = Field(default="baseline", max_length=16)
    version: int
    changed_at: datetime = _ts()


class TaskClass(SQLModel, table=True):
    """The class registry: every task class ever routed, added by the decision writer when a
    batch holds a class it has not written before. The escalation job and the quality endpoint
    read the class list here, not from the decisions."""

    __tablename__ = "task_class"

    name: str = Field(primary_key=True, max_length=200)
    first_routed_at: datetime = _ts()


class Decision(JSONTrackingModel, table=True):
    """A route call's answer, written in batches off the hot path.

    ``meta``: the caller's metadata (a JSON object, or None); nested values are read-only.
    ``caller``: the id of the API key that asked (``api_key.id``; None = no key). ``shadow``:
    a gateway call in shadow mode: the caller named the model it wanted and got it; ``model``
    is the one tierwise would have routed to.
    """

    __tablename__ = "decision"

    id: str = Field(primary_key=True, max_length=64)
    task_type: str = Field(max_length=200)
    task_class: str = Field(max_length=200, index=True)
    tier: str = Field(max_length=32)
    model: str = Field(max_length=128)
    provider: str = Field(max_length=64)
    table_version: int
    sampled: bool
    input_tokens: int
    has_tool_calls: bool
    meta: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    item_id: str | None = Field(default=None, max_length=200)
    caller: str | None = Field(default=None, max_length=32)
    shadow: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = _ts(index=True)


class Outcome(JSONTrackingModel, table=True):
    """What the caller reported after calling the model; one per decision (idempotent).

    Token counts are normalised (``router.pricing.Usage``); ``cost_usd`` is NULL when the served
    model has no price row ("unpriced"), never 0. ``usage_raw`` is the usage
    object as the caller reported it (nested values, such as token details, are read-only).
    Gateway calls also keep ``attempts``, one ``{"model", "status", "error", "latency_ms"}``
    per upstream call in order (the last one served, or failed), and ``ttft_ms``, the time to
    the first streamed chunk (None: not streamed, or reported through ``/v1/outcomes``).
    """

    __tablename__ = "outcome"

    decision_id: str = Field(primary_key=True, foreign_key="decision.id", max_length=64)
    task_class: str = Field(max_length=200, index=True)
    served_model: str = Field(max_length=128)
    status: str = Field(max_length=16)
    latency_ms: float | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    usage_raw: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    attempts: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONList)
    ttft_ms: float | None = None
    created_at: datetime = _ts(index=True)


class Sample(JSONTrackingModel, table=True):
    """A sampled outcome's text, queued for grading.

    ``status``: ``queued`` -> ``claimed`` (lease until ``lease_until``) -> ``graded`` | ``failed``.

    ``input_messages`` is a list of message dicts: the list itself can change in place, each
    message is read-only (replace it: ``row.input_messages[0] = {**m, "content": "..."}``).
    ``meta`` is the caller's route metadata, kept for reports and never read by the jobs;
    ``item_id`` the held-out item the request replays. ``answer_model``, when set, is the model
    whose answer is graded instead of the served one (a shadow-mode call: the model tierwise
    would have routed to; the grading job asks it first). The grading job's own state lives in
    its own columns: ``attempts``, the lease, and ``earlier_*``, the spend of an earlier
    attempt that gave no verdict (its one retry is used once ``earlier_verdict`` is set; the
    final grade books both attempts). Tokens; USD (NULL = unpriced).
    """

    __tablename__ = "sample"

    decision_id: str = Field(primary_key=True, foreign_key="decision.id", max_length=64)
    task_class: str = Field(max_length=200, index=True)
    model: str = Field(max_length=128)
    input_messages: list[dict[str, Any]] = Field(sa_type=JSONList)
    output_text: str = Field(sa_type=sa.Text)
    meta: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    item_id: str | None = Field(default=None, max_length=200)
    answer_model: str | None = Field(default=None, max_length=128)
    status: str = Field(default="queued", max_length=16, index=True)
    attempts: int = 0
    earlier_verdict: str | None = Field(default=None, max_length=16)
    earlier_input_tokens: int = 0
    earlier_output_tokens: int = 0
    earlier_cost_usd: float | None = None
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    decided_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = _ts()
