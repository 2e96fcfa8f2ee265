"""Tables owned by the control plane: grades, escalation events, the escalation rule's state per
class and the runs of scheduled jobs. Costs nano-USD (``router.money``), times UTC. JSON columns are
``router.db.JSONDict``: a change to the value's top level in place is saved on commit; dicts and
lists nested inside are read-only."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from router.db import JSONDict, JSONTrackingModel, UTCDateTime, utcnow


class Grade(SQLModel, table=True):
    """The reference model's verdict on one sample.

    ``verdict``: ``agree`` | ``disagree`` | ``invalid`` | ``refused``; only agree and disagree
    enter the disagreement rate. ``raw_output`` is the judge's (or reference model's) text;
    ``cost_nusd`` (nano-USD, :mod:`router.money`) is NULL when the reference model is unpriced.

    ``shadow``: a shadow probe of an escalated class (:func:`evaluator.grading.shadow_model`):
    ``model`` is then the next cheaper model, whose answer to the sample's input was obtained by
    the grading job and graded in place of the served answer; ``cost_nusd`` includes that call.
    Shadow grades are the way back's evidence only, never the served model's own.
    """

    __tablename__ = "grade"
    __table_args__ = (
        sa.CheckConstraint(
            "verdict IN ('agree', 'disagree', 'invalid', 'refused')", name="ck_grade_verdict"
        ),
        sa.Index("ix_grade_class_model_decided", "task_class", "model", "decided_at"),
        # The escalation job's read of the grades written since its settled counts.
        sa.Index("ix_grade_class_model_created", "task_class", "model", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    decision_id: str = Field(foreign_key="sample.decision_id", max_length=64, unique=True)
    task_class: str = Field(max_length=200)
    model: str = Field(max_length=128)
    reference_model: str = Field(max_length=128)
    grader: str = Field(max_length=32)
    verdict: str = Field(max_length=16)
    score: float | None = None
    parse_status: str = Field(max_length=32)
    raw_output: str = Field(default="", sa_type=sa.Text)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nusd: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    decided_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    shadow: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class EscalationEvent(JSONTrackingModel, table=True):
    """A routing-table change for a class, with its evidence.

    ``n`` graded samples (agree + disagree), ``k`` disagreements, ``rate`` = k/n, and the
    ``confidence`` Wilson interval [``ci_low``, ``ci_high``]; ``rule`` names the rule and its
    parameters. ``window_start`` is the start of the evidence window (the class's last change);
    (task_class, window_start, to_status) is unique so a duplicated job run cannot write twice.
    """

    __tablename__ = "escalation_event"
    __table_args__ = (
        sa.UniqueConstraint("task_class", "window_start", "to_status", name="uq_escalation_window"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_class: str = Field(max_length=200, index=True)
    from_model: str = Field(max_length=128)
    to_model: str = Field(max_length=128)
    from_status: str = Field(max_length=16)
    to_status: str = Field(max_length=16)
    actor: str = Field(max_length=64)
    reason: str = Field(sa_type=sa.Text)
    rule: str = Field(max_length=200)
    n: int
    k: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float
    confidence: float
    table_version: int
    window_start: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The rule's state and statistic when the change was made (manual changes too): see
    # evaluator.escalation.evidence_of. A record: its nested values are read-only.
    evidence: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)


class RuleStateRow(JSONTrackingModel, table=True):
    """The sequential rule's state for one class (evaluator.sequential.RuleState.to_dict) on
    ``model`` over the window starting at ``window_start`` (the class's last change); a row for
    another model or window is stale and is replaced by a fresh state. ``state`` is replaced
    whole on each update (its nested values, if any, are read-only)."""

    __tablename__ = "rule_state"

    task_class: str = Field(primary_key=True, max_length=200)
    model: str = Field(max_length=128)
    window_start: datetime = Field(sa_type=UTCDateTime)
    state: dict[str, Any] = Field(sa_type=JSONDict)
    action: str = Field(max_length=16)
    reason: str = Field(default="", sa_type=sa.Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The window's settled verdict counts, so a run reads only the grades written since
    # (evaluator.escalation._repository.settled_window_counts): {"own": cache, "shadow": cache
    # or None}; replaced whole (nested values read-only); None = none yet.
    counts: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)


class JobRun(JSONTrackingModel, table=True):
    """One run of a scheduled job for one tick (the start of its UTC interval). (job, tick) is
    unique, so however many workers fire on a tick, one run commits (docs/field-cases.md); a run
    that fails rolls back its row and the tick can run again. ``result`` is the run's summary
    (a JSON object; nested values read-only), written when the run ends."""

    __tablename__ = "job_run"
    __table_args__ = (sa.UniqueConstraint("job", "tick", name="uq_job_run_tick"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=32)
    tick: datetime = Field(sa_type=UTCDateTime)
    worker: str = Field(max_length=128)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)


class GradingBudgetRow(SQLModel, table=True):
    """One UTC day of the grading budget for one scope (``*`` = global, else a task class).

    Money is integer nano-USD (1 USD = 10**9), so reservations add and subtract exactly:
    ``limit_nusd`` is the policy's ``grading_budget_usd_per_day`` last applied to the row,
    ``reserved_nusd`` the estimates of calls in flight, ``spent_nusd`` the settled actual cost.
    Only :mod:`evaluator.grading._budget` writes it, with conditional updates
    (``reserved + spent + x <= limit``)."""

    __tablename__ = "grading_budget"
    __table_args__ = (
        sa.CheckConstraint(
            "reserved_nusd >= 0 AND spent_nusd >= 0", name="ck_grading_budget_nonneg"
        ),
    )

    scope: str = Field(primary_key=True, max_length=200)
    day: date = Field(primary_key=True, sa_type=sa.Date)
    limit_nusd: int = Field(sa_type=sa.BigInteger)
    reserved_nusd: int = Field(default=0, sa_type=sa.BigInteger)
    spent_nusd: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class GradingBatch(SQLModel, table=True):
    """One provider batch of grading calls for one model (``evaluator.grading.batch``).

    ``status``: ``submitted`` -> ``ended`` (results read) | ``abandoned`` (never finished by
    its deadline; its samples went back to the queue). ``provider_status`` is the provider's
    own word at the last poll. Counts are items: ``requests`` submitted, then ``succeeded``,
    ``errored`` and ``expired`` (expired, canceled or missing from the results) once ended.
    """

    __tablename__ = "grading_batch"
    __table_args__ = (
        sa.UniqueConstraint("provider", "provider_batch_id", name="uq_grading_batch_provider_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=32)
    model: str = Field(max_length=128)
    provider_batch_id: str = Field(max_length=128)
    status: str = Field(default="submitted", max_length=16, index=True)
    provider_status: str = Field(default="submitted", max_length=32)
    submitted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deadline: datetime = Field(sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    requests: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0


class GradingBatchItem(JSONTrackingModel, table=True):
    """One grading call inside a :class:`GradingBatch`: the sample it grades, the stage of the
    grader it belongs to (1 = first) and the request key in that stage (``reference``,
    ``judge_A``, ``shadow`` ...). ``lease_until`` is the sample's claim when submitted (the
    write-back's fencing token). ``status``: ``pending`` -> ``answered`` (``response`` holds
    the reply: text, model, finish reason, usage in tokens) | ``failed`` | ``requeued``."""

    __tablename__ = "grading_batch_item"
    __table_args__ = (
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_grading_batch_item_custom_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="grading_batch.id", index=True)
    custom_id: str = Field(max_length=64)
    decision_id: str = Field(foreign_key="sample.decision_id", max_length=64, index=True)
    stage: int
    key: str = Field(max_length=64)
    lease_until: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=16)
    response: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)


class GradingCost(SQLModel, table=True):
    """The spend of one answered batch item, booked once: the unique (provider batch id,
    custom id) makes a result read twice one row. Tokens; nano-USD (exact, as every stored
    amount: ``router.money``) after the catalog's ``batch_discount`` (NULL = unpriced)."""

    __tablename__ = "grading_cost"
    __table_args__ = (
        sa.UniqueConstraint(
            "provider_batch_id", "custom_id", name="uq_grading_cost_batch_custom_id"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider_batch_id: str = Field(max_length=128)
    custom_id: str = Field(max_length=64)
    decision_id: str = Field(foreign_key="sample.decision_id", max_length=64, index=True)
    model: str = Field(max_length=128)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nusd: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
