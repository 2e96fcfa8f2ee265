"""Tables owned by the data plane (``table=True``): catalog, policy, routing table, decisions,
outcomes and the samples queued for grading. API schemas live in ``router.schemas``.

Money is exact (:mod:`router.money`): prices are whole nano-USD per 1M tokens
(``*_nusd_per_mtok``), costs whole nano-USD (``*_nusd``, BigInteger; NULL = unpriced, never 0);
latencies ms; timestamps UTC.
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
    """Model catalog row: one model tierwise knows. Its prices are in ``price``, with history.

    ``api_model`` is the id sent to the provider (NULL = ``name``); ``aliases`` the other names
    the provider reports for it (``router.policy.ModelPrice``).
    """

    __tablename__ = "model"

    name: str = Field(primary_key=True, max_length=128)
    provider: str = Field(max_length=64)
    api_model: str | None = Field(default=None, max_length=128)
    aliases: list[str] = Field(default_factory=list, sa_type=JSONList)
    updated_at: datetime = _ts()


def _nusd(*, nullable: bool = True) -> Any:
    """A BigInteger column of nano-USD (NULL = unpriced when nullable)."""
    return Field(default=None, sa_type=sa.BigInteger, nullable=nullable)


class Price(SQLModel, table=True):
    """One model's prices from ``effective_from`` (UTC) until the model's next row: the price
    history. Rows are only added (``router.table.apply_policy``), never changed, so an outcome
    priced at a row keeps its cost. Prices are whole nano-USD per 1M tokens (0.15 USD per 1M
    = 150,000,000); NULL cached input / cache write = the input price; NULL embedding input =
    none. ``batch_discount`` is the fraction a provider's batch API takes off (0.5 for OpenAI
    Batch and Anthropic Message Batches); it is stored as a float and read back as the decimal of
    its shortest text (``Decimal(repr(x))``), exact for the at most 15 significant digits a
    policy file gives.
    """

    __tablename__ = "price"
    __table_args__ = (
        sa.UniqueConstraint("model", "effective_from", name="uq_price_model_from"),
        sa.CheckConstraint("input_nusd_per_mtok >= 0", name="ck_price_input"),
        sa.CheckConstraint("output_nusd_per_mtok >= 0", name="ck_price_output"),
        sa.CheckConstraint("batch_discount >= 0 AND batch_discount < 1", name="ck_price_batch"),
    )

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(foreign_key="model.name", max_length=128)
    effective_from: datetime = Field(sa_type=UTCDateTime, nullable=False)
    input_nusd_per_mtok: int = Field(sa_type=sa.BigInteger, nullable=False)
    cached_input_nusd_per_mtok: int | None = _nusd()
    cache_write_nusd_per_mtok: int | None = _nusd()
    output_nusd_per_mtok: int = Field(sa_type=sa.BigInteger, nullable=False)
    embedding_input_nusd_per_mtok: int | None = _nusd()
    batch_discount: float = 0.5
    created_at: datetime = _ts()


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

    Token counts are normalised (``router.pricing.Usage``); ``cost_nusd`` (nano-USD) is the cost
    at the served model's price in effect at the decision's time, fixed when the outcome is
    stored (the cost is kept, not the price row: a later price never changes it). It is NULL
    when the served model has no price then or no usage was reported ("unpriced"), never 0.
    ``usage_raw`` is the usage object as the caller reported it (nested values, such as token
    details, are read-only).
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
    cost_nusd: int | None = _nusd()
    usage_raw: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    attempts: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONList)
    ttft_ms: float | None = None
    # The decision's ``created_at``: the partition key on PostgreSQL (``router.partitions``), so a
    # decision's outcome lives in the same UTC day's partition and a repeated report conflicts on
    # (decision_id, decided_at) exactly as on decision_id alone.
    decided_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_at: datetime = _ts(index=True)


class Sample(JSONTrackingModel, table=True):
    """A sampled outcome's text, queued for grading.

    The text is stored after the class's redaction (``router.lifecycle.stored_text``) and kept
    for the class's ``text_retention_days``; a class with 0 never stores it (nothing is queued).

    ``status``: ``queued`` -> ``claimed`` (lease until ``lease_until``) -> ``graded`` | ``failed``.

    ``input_messages`` is a list of message dicts: the list itself can change in place, each
    message is read-only (replace it: ``row.input_messages[0] = {**m, "content": "..."}``).
    ``meta`` is the caller's route metadata, kept for reports and never read by the jobs;
    ``item_id`` the held-out item the request replays. ``answer_model``, when set, is the model
    whose answer is graded instead of the served one (a shadow-mode call: the model tierwise
    would have routed to; the grading job asks it first). The grading job's own state lives in
    its own columns: ``attempts``, the lease, and ``earlier_*``, the spend of an earlier
    attempt that gave no verdict (its one retry is used once ``earlier_verdict`` is set; the
    final grade books both attempts). Tokens; nano-USD (NULL = unpriced).
    """

    __tablename__ = "sample"
    __table_args__ = (
        # The text retention job's scan: per class, the oldest samples still holding text.
        sa.Index(
            "ix_sample_text_kept",
            "task_class",
            "created_at",
            sqlite_where=sa.text("text_deleted_at IS NULL"),
            postgresql_where=sa.text("text_deleted_at IS NULL"),
        ),
    )

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
    earlier_cost_nusd: int | None = _nusd()
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    decided_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = _ts()
    # When the text retention job (``evaluator.lifecycle``) deleted this sample's text
    # (``input_messages`` emptied, ``output_text`` blanked, its grade's ``raw_output`` too);
    # None while the text is kept.
    text_deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class LaneFile(SQLModel, table=True):
    """A file of the batch lane's Files API (``POST /v1/files``, purpose ``batch``): a caller's
    input file, or an output or error file tierwise assembled for a batch (``batch_id``).
    ``caller`` is the API key id that owns it (None in open mode); ``size`` its bytes."""

    __tablename__ = "lane_file"

    id: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(max_length=32)
    filename: str = Field(max_length=256)
    size: int
    content: bytes = Field(sa_type=sa.LargeBinary)
    caller: str | None = Field(default=None, max_length=32, index=True)
    batch_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()


class LaneBatch(JSONTrackingModel, table=True):
    """A caller's batch (``POST /v1/batches``): the lines of ``input_file_id``, each routed
    and kept as a :class:`LaneItem`. ``status``: ``in_progress`` -> ``cancelling`` ->
    ``cancelled``, or ``completed`` | ``expired`` once every item ended (``expired`` when one
    ran out of its window for good); the output and error files are assembled then. ``kind``
    ``deferred`` is one gateway call on the batch lane (``X-Tierwise-Lane: batch`` or a class
    on lane ``batch``): no input file, its answer at ``GET /v1/batches/{id}/result``."""

    __tablename__ = "lane_batch"

    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(default="batch", max_length=16)
    caller: str | None = Field(default=None, max_length=32, index=True)
    input_file_id: str = Field(max_length=64)
    endpoint: str = Field(max_length=64)
    completion_window: str = Field(max_length=16)
    meta: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    status: str = Field(default="in_progress", max_length=16, index=True)
    total: int = 0
    output_file_id: str | None = Field(default=None, max_length=64)
    error_file_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts(index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    cancelling_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    # A deferred call's webhook: POSTed its result once it ended (``webhook_state`` pending ->
    # delivered | failed, tried once per poll run up to the lane's limit).
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_state: str | None = Field(default=None, max_length=16, index=True)
    webhook_attempts: int = 0


class LaneUpstream(SQLModel, table=True):
    """One provider batch the lane submitted: items of one model. ``key`` (unique) is a hash
    of its item ids, written before the provider is called, so the same items are never
    submitted twice. ``status``: ``submitting`` (claimed, provider not yet answered; a row
    left so by a crash is ``unknown`` after its lease: it may or may not have reached the
    provider, and its items are reported, never sent again) -> ``submitted`` -> ``ended``."""

    __tablename__ = "lane_upstream"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    provider: str = Field(max_length=32)
    model: str = Field(max_length=128)
    provider_batch_id: str | None = Field(default=None, max_length=128)
    status: str = Field(default="submitting", max_length=16, index=True)
    provider_status: str = Field(default="submitting", max_length=32)
    items: int = 0
    cancel_requested: bool = False
    created_at: datetime = _ts()
    submitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class LaneItem(JSONTrackingModel, table=True):
    """One line of a caller's batch: its custom id and line number, the decision it was routed
    by (``decision_id``, written at create), the routed catalog ``model`` and the ``body`` to
    send (the caller's Chat Completions body). ``status``: ``queued`` -> ``submitted`` ->
    ``succeeded`` | ``failed`` | ``expired`` | ``cancelled``; an expired or transiently failed
    item goes back to ``queued`` until ``attempts`` reaches the lane's limit. ``response`` is
    the chat completion (succeeded), ``error`` ``{"code", "message", "status"}`` otherwise.
    ``not_before``: a deferred call of an off-peak class waits for its window to open.
    ``realtime_cost_nusd``: what the answer would have cost without the batch discount (the
    outcome holds the discounted cost), for the books' batch savings."""

    __tablename__ = "lane_item"
    __table_args__ = (
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_lane_item_custom_id"),
        sa.Index("ix_lane_item_status_model", "status", "model"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(foreign_key="lane_batch.id", max_length=64, index=True)
    custom_id: str = Field(max_length=512)
    line: int
    # No foreign key: decision is partitioned by day on PostgreSQL (its key is (id, created_at))
    # and a day may be dropped while the batch is kept; the lane writes both in one transaction.
    decision_id: str = Field(max_length=64, unique=True)
    task_class: str = Field(max_length=200)
    model: str = Field(max_length=128)
    provider: str = Field(max_length=64)
    body: dict[str, Any] = Field(sa_type=JSONDict)
    status: str = Field(default="queued", max_length=16)
    attempts: int = 0
    upstream_id: int | None = Field(
        default=None, foreign_key="lane_upstream.id", nullable=True, index=True
    )
    response: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    realtime_cost_nusd: int | None = Field(default=None, sa_type=sa.BigInteger)
    queued_at: datetime = _ts()
    not_before: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


# The compression stage's tables (router.compression.models) belong to the data plane's schema.
import router.compression.models  # noqa: E402, F401
