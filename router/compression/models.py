"""Tables of prompt compression: the books per day, the quality guard's probes, its per-class
state and its events. Tokens are the offline estimate (:mod:`router.tokens`); money whole
nano-USD (:mod:`router.money`; NULL = unpriced); timestamps UTC.

- ``compression_day``: per UTC day, class and served model, the calls the stage saw, how many it
  compressed and how many the extraction guard sent whole, the context tokens before and after,
  and the input cost saved at the served model's catalog input price. Rows are added to, never
  rewritten (``INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x``), so replicas share them.
- ``compression_probe``: a compressed call also to be answered uncompressed off the hot path
  (``trial`` false: the served answer is the compressed one) or, for a class the guard stepped
  back, a call whose stronger compression is tried off the hot path (``trial`` true: the job
  compresses at ``ratio`` and asks for both answers). ``status``: ``queued`` -> ``graded``
  -> ``counted`` (fed to the rule), or ``failed`` (``attempts`` provider failures) or
  ``skipped`` (a trial with nothing to compress); the grade's verdict, score, raw output and
  its spend (the guard's grading spend, tokens and nano-USD).
- ``compression_state``: per class, the guard's level (0 = the policy's ratio, 1 = a gentler
  ratio, 2 = off) and its sequential rule state (``evaluator.sequential.RuleState``).
- ``compression_event``: each step back (or forward) with its evidence: k of n disagreements
  and the Wilson interval, the rule, its statistic and the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from router.db import JSONDict, JSONList, JSONTrackingModel, UTCDateTime, utcnow


class CompressionDay(SQLModel, table=True):
    """The books of one UTC day, class and served model (module doc)."""

    __tablename__ = "compression_day"

    day: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    task_class: str = Field(primary_key=True, max_length=200)
    model: str = Field(primary_key=True, max_length=128)
    calls: int = 0
    compressed: int = 0
    guarded: int = 0
    tokens_before: int = Field(default=0, sa_type=sa.BigInteger)
    tokens_after: int = Field(default=0, sa_type=sa.BigInteger)
    saved_nusd: int = Field(default=0, sa_type=sa.BigInteger)


class CompressionProbe(JSONTrackingModel, table=True):
    """One call the quality guard grades (module doc). ``input_messages``: the messages as the
    caller sent them (uncompressed); ``output_text``: the answer to the compressed messages
    (NULL for a trial, whose compressed answer the job asks for)."""

    __tablename__ = "compression_probe"

    decision_id: str = Field(primary_key=True, max_length=64)
    task_class: str = Field(max_length=200, index=True)
    model: str = Field(max_length=128)
    level: int
    ratio: float
    pipeline: list[str] = Field(default_factory=list, sa_type=JSONList)
    guard: bool = False
    trial: bool = False
    input_messages: list[dict[str, Any]] = Field(sa_type=JSONList)
    output_text: str | None = Field(default=None, sa_type=sa.Text)
    status: str = Field(default="queued", max_length=16, index=True)
    verdict: str | None = Field(default=None, max_length=16)
    score: float | None = None
    parse_status: str | None = Field(default=None, max_length=32)
    raw_output: str | None = Field(default=None, sa_type=sa.Text)
    error: str | None = Field(default=None, max_length=500)
    attempts: int = 0
    grade_input_tokens: int = 0
    grade_output_tokens: int = 0
    grade_cost_nusd: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    graded_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class CompressionState(JSONTrackingModel, table=True):
    """The quality guard's level and rule state of one class (module doc)."""

    __tablename__ = "compression_state"

    task_class: str = Field(primary_key=True, max_length=200)
    level: int = 0
    rule_state: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDict)
    changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CompressionEvent(JSONTrackingModel, table=True):
    """A change of a class's compression level, with its evidence (module doc)."""

    __tablename__ = "compression_event"

    id: int | None = Field(default=None, primary_key=True)
    task_class: str = Field(max_length=200, index=True)
    at: datetime = Field(sa_type=UTCDateTime)
    from_level: int
    to_level: int
    from_ratio: float | None = None
    to_ratio: float | None = None
    n: int
    k: int
    rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    rule: str = Field(sa_type=sa.Text)
    reason: str = Field(sa_type=sa.Text)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDict)
