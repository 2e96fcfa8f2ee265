"""Scheduled jobs of the control plane: grade queued samples, apply the escalation rule.

Both are plain async functions over a session factory, so the scheduler, the replay driver and
the tests run the very same code. On PostgreSQL, samples are claimed with ``FOR UPDATE SKIP
LOCKED`` and a lease (a crashed worker's claims return to the pool when the lease runs out), and
each escalation run holds a transaction-level advisory lock so concurrent workers run it once.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation import ClassState as ClassState
from evaluator.escalation import EscalationRun as EscalationRun
from evaluator.escalation import class_states as class_states
from evaluator.escalation import run_escalation as run_escalation
from evaluator.escalation import window_counts as window_counts
from evaluator.graders import GRADERS, GraderEnv, GradeResult, SampleView
from evaluator.models import Grade
from evaluator.providers.base import Deferred, ProviderError
from router.db import dialect_of, utcnow
from router.models import Sample
from router.policy import Policy
from router.pricing import cost_usd
from router.table import latest_policy

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _advisory_key(name: str) -> int:
    return zlib.crc32(f"tierwise:{name}".encode())


async def _try_job_lock(session: AsyncSession, name: str) -> bool:
    """Take the job's transaction-level advisory lock on PostgreSQL; always True on SQLite
    (one process owns an embedded database)."""
    if dialect_of(session) != "postgresql":
        return True
    conn = await session.connection()
    got = await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_advisory_key(name))))
    return bool(got.scalar_one())


# ---- grading ---------------------------------------------------------------------------------


@dataclass
class GradingRun:
    """What one grading run did."""

    claimed: int = 0
    graded: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    deferred: int = 0
    retried: int = 0
    cost_usd: float = 0.0


# Field case J2: a grade without a verdict (invalid/refused) on the first attempt is requeued
# once; what that attempt spent is kept in the sample's meta under this key and added to the
# final grade's tokens and cost, so the books hold both calls and the grade row is written once.
FIRST_ATTEMPT = "first_attempt"
NO_VERDICT = ("invalid", "refused")


def _first_attempt(row: Sample) -> dict[str, Any] | None:
    first = (row.meta or {}).get(FIRST_ATTEMPT)
    return first if isinstance(first, dict) else None


def _requeue_without_verdict(row: Sample, result: GradeResult, cost: float | None) -> bool:
    """Requeue ``row`` for its one retry if ``result`` has no verdict and this was the first
    attempt (recording that attempt in ``row.meta``). True when requeued."""
    if result.verdict not in NO_VERDICT or _first_attempt(row) is not None:
        return False
    row.meta = {
        **(row.meta or {}),
        FIRST_ATTEMPT: {
            "verdict": result.verdict,
            "parse_status": result.parse_status,
            "input_tokens": result.usage.total_input_tokens,
            "output_tokens": result.usage.output_tokens,
            "cost_usd": cost,
        },
    }
    row.status, row.lease_until = "queued", None
    return True


def _spend(row: Sample, result: GradeResult, cost: float | None) -> tuple[int, int, float | None]:
    """(input tokens, output tokens, USD) of the final grade: this attempt plus a first attempt
    that had no verdict; USD is None (unpriced) if either attempt is."""
    tokens_in, tokens_out = result.usage.total_input_tokens, result.usage.output_tokens
    first = _first_attempt(row)
    if first is None:
        return tokens_in, tokens_out, cost
    earlier = first.get("cost_usd")
    total = None if cost is None or earlier is None else cost + float(earlier)
    return (
        tokens_in + int(first.get("input_tokens", 0)),
        tokens_out + int(first.get("output_tokens", 0)),
        total,
    )


async def claim_samples(session: AsyncSession, *, limit: int, lease_s: float) -> list[Sample]:
    """Claim up to ``limit`` queued samples (or claimed ones whose lease expired) and commit.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers never claim the same sample.
    """
    now = utcnow()
    stmt = (
        select(Sample)
        .where(
            or_(
                col(Sample.status) == "queued",
                (col(Sample.status) == "claimed") & (col(Sample.lease_until) < now),
            )
        )
        .order_by(col(Sample.created_at))
        .limit(limit)
    )
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = list((await session.exec(stmt)).all())
    lease = now + timedelta(seconds=lease_s)
    for row in rows:
        row.status, row.lease_until, row.attempts = "claimed", lease, row.attempts + 1
    await session.commit()
    return rows


def _insert_ignore(dialect: str, table: type) -> sa.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


TRANSIENT_BACKOFF_S = 30.0


async def _grade_one(
    sample: Sample, policy: Policy, env: GraderEnv, gate: asyncio.Semaphore
) -> tuple[Sample, str, GradeResult | None, ProviderError | None]:
    """Grade one sample with its class's grader; a provider failure is returned, not raised."""
    settings = policy.settings_for(sample.task_class)
    reference = policy.reference_model(sample.task_class)
    view = SampleView(
        sample.decision_id,
        sample.task_class,
        sample.model,
        sample.input_messages,
        sample.output_text,
        sample.meta or {},
    )
    async with gate:
        try:
            result = await GRADERS[settings.grader].grade(view, settings, reference, env)
        except ProviderError as exc:
            return sample, reference, None, exc
    return sample, reference, result, None


async def grade_pending(
    sessions: async_sessionmaker[AsyncSession],
    env: GraderEnv,
    *,
    batch_size: int = 200,
    concurrency: int = 8,
    lease_s: float = 600.0,
    max_batches: int | None = None,
) -> GradingRun:
    """Grade queued samples until none are left (or ``max_batches``). Returns counts and the
    grading spend in USD. A transient provider failure leaves the sample claimed for a back-off
    (30 s x attempts) and it is retried in a later run, up to 3 attempts, then ``failed``; a
    permanent failure is ``failed`` at once. A :class:`Deferred` sample (a rate-limit hint longer
    than the job's budget, field case P1) stays claimed until the hinted time and does not use up
    an attempt. A grade without a verdict (invalid/refused) on the first
    attempt requeues the sample once (field case J2); the second attempt's grade is final."""
    run = GradingRun()
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        async with sessions() as session:
            policy = await latest_policy(session)
            samples = await claim_samples(session, limit=batch_size, lease_s=lease_s)
            catalog = {}
            if policy is not None:
                catalog = {m.name: m for m in policy.spec.models}
        if not samples or policy is None:
            break
        run.claimed += len(samples)
        gate = asyncio.Semaphore(concurrency)
        outcomes = await asyncio.gather(*(_grade_one(s, policy, env, gate) for s in samples))
        async with sessions() as session:
            dialect = dialect_of(session)
            ids = [s.decision_id for s in samples]
            rows = {
                r.decision_id: r
                for r in (
                    await session.exec(select(Sample).where(col(Sample.decision_id).in_(ids)))
                ).all()
            }
            for sample, reference, result, error in outcomes:
                row = rows[sample.decision_id]
                if result is None:
                    assert error is not None
                    now = utcnow()
                    if isinstance(error, Deferred):
                        # Keep it claimed until the provider's hint has passed: the next run
                        # after that picks it up again (claim_samples takes expired leases).
                        run.deferred += 1
                        row.lease_until = now + timedelta(seconds=error.retry_after_s)
                        row.attempts = max(0, row.attempts - 1)
                    elif error.transient and row.attempts < 3:
                        backoff = TRANSIENT_BACKOFF_S * row.attempts
                        row.lease_until = now + timedelta(seconds=backoff)
                    else:
                        run.failed += 1
                        row.status = "failed"
                        log.warning("grading %s failed: %s", sample.decision_id, error)
                    continue
                price = catalog.get(reference)
                cost = cost_usd(result.usage, price)
                run.cost_usd += cost or 0.0
                if _requeue_without_verdict(row, result, cost):
                    run.retried += 1
                    continue
                tokens_in, tokens_out, cost = _spend(row, result, cost)
                await session.exec(
                    _insert_ignore(dialect, Grade).values(
                        decision_id=sample.decision_id,
                        task_class=sample.task_class,
                        model=sample.model,
                        reference_model=reference,
                        grader=policy.settings_for(sample.task_class).grader,
                        verdict=result.verdict,
                        score=result.score,
                        parse_status=result.parse_status,
                        raw_output=result.raw_output,
                        input_tokens=tokens_in,
                        output_tokens=tokens_out,
                        cost_usd=cost,
                        decided_at=sample.decided_at,
                        created_at=utcnow(),
                    )
                )
                row.status, row.lease_until = "graded", None
                run.graded += 1
                run.verdicts[result.verdict] = run.verdicts.get(result.verdict, 0) + 1
            await session.commit()
    return run


# ---- escalation ------------------------------------------------------------------------------
# The escalation job (the sequential rule, its state per class, exactly-once runs, operators'
# changes) lives in evaluator.escalation; ClassState, EscalationRun, class_states,
# run_escalation and window_counts stay importable from here (imported at the top).
