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
from sqlmodel import col, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import GRADERS, GraderEnv, GradeResult, SampleView
from evaluator.models import EscalationEvent, Grade
from evaluator.providers.base import Deferred, ProviderError
from evaluator.stats import RuleDecision, fixed_window_rule
from router.db import dialect_of, utcnow
from router.models import Decision, RoutingEntry, Sample
from router.policy import Policy
from router.pricing import cost_usd
from router.table import change_class, latest_policy

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
    return (tokens_in + int(first.get("input_tokens", 0)),
            tokens_out + int(first.get("output_tokens", 0)), total)


async def claim_samples(
    session: AsyncSession, *, limit: int, lease_s: float
) -> list[Sample]:
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


@dataclass(frozen=True, slots=True)
class ClassState:
    """A class's current evidence window and what the rule says about it."""

    task_class: str
    model: str
    status: str
    window_start: datetime
    decision: RuleDecision
    invalid: int


async def window_counts(
    session: AsyncSession, task_class: str, model: str, since: datetime
) -> dict[str, int]:
    """Verdict counts for ``task_class`` on ``model`` over samples decided at or after ``since``."""
    rows = await session.exec(
        select(Grade.verdict, func.count())
        .where(
            col(Grade.task_class) == task_class,
            col(Grade.model) == model,
            col(Grade.decided_at) >= since,
        )
        .group_by(col(Grade.verdict))
    )
    return {verdict: int(count) for verdict, count in rows.all()}


async def class_states(session: AsyncSession) -> list[ClassState]:
    """Every routed or graded class with its window and the rule's verdict on it."""
    policy = await latest_policy(session)
    if policy is None:
        return []
    entries = {e.task_class: e for e in (await session.exec(select(RoutingEntry))).all()}
    routed = set((await session.exec(select(Decision.task_class).distinct())).all())
    states = []
    for task_class in sorted(set(entries) | routed):
        entry = entries.get(task_class)
        if entry is not None:
            model, status, since = entry.model, entry.status, entry.changed_at
        else:
            tier = policy.match(task_class, 0, False).tier
            model, status, since = policy.model_for_tier(tier), "baseline", EPOCH
        counts = await window_counts(session, task_class, model, since)
        settings = policy.settings_for(task_class)
        decision = fixed_window_rule(
            counts.get("disagree", 0),
            counts.get("agree", 0) + counts.get("disagree", 0),
            threshold=settings.threshold,
            min_samples=settings.min_samples,
            confidence=settings.confidence,
        )
        invalid = counts.get("invalid", 0) + counts.get("refused", 0)
        states.append(ClassState(task_class, model, status, since, decision, invalid))
    return states


@dataclass
class EscalationRun:
    """What one escalation run did; ``skipped`` is True when another worker holds the lock."""

    skipped: bool = False
    escalated: list[str] = field(default_factory=list)
    at_top: list[str] = field(default_factory=list)


async def run_escalation(sessions: async_sessionmaker[AsyncSession]) -> EscalationRun:
    """Apply the escalation rule to every class; escalate those it says to, one ladder step up,
    recording an escalation event with the evidence. Runs once across workers (advisory lock)
    and never writes two events for the same (class, window) (unique constraint)."""
    run = EscalationRun()
    async with sessions() as session:
        if not await _try_job_lock(session, "escalation"):
            run.skipped = True
            return run
        policy = await latest_policy(session)
        if policy is None:
            return run
        for state in await class_states(session):
            if state.decision.action != "escalate" or state.status == "pinned":
                continue
            target = policy.next_model(state.model)
            if target is None:
                run.at_top.append(state.task_class)
                continue
            settings = policy.settings_for(state.task_class)
            _, after = await change_class(
                session, state.task_class, model=target, status="escalated"
            )
            est = state.decision.estimate
            session.add(
                EscalationEvent(
                    task_class=state.task_class,
                    from_model=state.model,
                    to_model=target,
                    from_status=state.status,
                    to_status="escalated",
                    actor="escalation-job",
                    reason=state.decision.reason,
                    rule=state.decision.rule,
                    n=est.n,
                    k=est.k,
                    rate=est.rate,
                    ci_low=est.ci_low,
                    ci_high=est.ci_high,
                    threshold=settings.threshold,
                    confidence=settings.confidence,
                    table_version=after.version,
                    window_start=state.window_start,
                )
            )
            run.escalated.append(state.task_class)
            log.info("escalated %s %s -> %s: %s", state.task_class, state.model, target,
                     state.decision.reason)
        await session.commit()
    return run
