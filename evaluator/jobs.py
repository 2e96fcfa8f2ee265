"""Scheduled jobs of the control plane: grade queued samples, apply the escalation rule.

Both are plain async functions over a session factory, so the scheduler, the replay driver and
the tests run the very same code. On PostgreSQL, samples are claimed with ``FOR UPDATE SKIP
LOCKED`` and a lease (a crashed worker's claims return to the pool when the lease runs out), and
each escalation run holds a transaction-level advisory lock so concurrent workers run it once.

Shadow probes (the way back of an escalated class, docs/escalation.md): a sample of an
``escalated`` class is graded as a *shadow* sample (:func:`shadow_model`): the grading job asks
the next cheaper model on the ladder for its answer to the sample's input messages, grades that
answer with the class's grader against the class's reference model, and stores the grade with
``model`` = the cheaper model and ``shadow`` = true. Those grades are the only evidence the way
back reads (:func:`evaluator.escalation.window_counts` with ``shadow=True``).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

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
from evaluator.graders import GRADERS, GraderEnv, GradeResult, SampleView, add_usage
from evaluator.graders._base import no_verdict, reference_answer
from evaluator.models import Grade
from evaluator.parsing import no_verdict_status
from router.db import dialect_of, utcnow
from router.models import RoutingEntry, Sample
from router.policy import Policy
from router.pricing import Usage, cost_usd
from router.providers.base import Deferred, ProviderError
from router.sampling import sample_point
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
    lost_leases: int = 0
    cost_usd: float = 0.0


NO_VERDICT = ("invalid", "refused")
"""Verdicts that are no verdict: the first such grade of a sample is retried once."""


def _requeue_without_verdict(row: Sample, result: GradeResult, cost: float | None) -> bool:
    """Requeue ``row`` for its one retry if ``result`` has no verdict and no earlier attempt
    had one either (the spend of this attempt goes to ``row.earlier_*``, the job's own
    columns). True when requeued."""
    if result.verdict not in NO_VERDICT or row.earlier_verdict is not None:
        return False
    row.earlier_verdict = result.verdict
    row.earlier_input_tokens = result.usage.total_input_tokens
    row.earlier_output_tokens = result.usage.output_tokens
    row.earlier_cost_usd = cost
    row.status, row.lease_until = "queued", None
    return True


def _spend(row: Sample, result: GradeResult, cost: float | None) -> tuple[int, int, float | None]:
    """(input tokens, output tokens, USD) of the final grade: this attempt plus an earlier one
    that had no verdict; USD is None (unpriced) if either attempt is."""
    tokens_in, tokens_out = result.usage.total_input_tokens, result.usage.output_tokens
    if row.earlier_verdict is None:
        return tokens_in, tokens_out, cost
    earlier = row.earlier_cost_usd
    total = None if cost is None or earlier is None else cost + earlier
    return tokens_in + row.earlier_input_tokens, tokens_out + row.earlier_output_tokens, total


async def claim_samples(session: AsyncSession, *, limit: int, lease_s: float) -> list[Sample]:
    """Claim up to ``limit`` queued samples (or claimed ones whose lease expired) for
    ``lease_s`` seconds, and commit. A sample whose lease has expired ``MAX_ATTEMPTS`` times
    (a worker kept dying on it) is marked ``failed`` instead of being claimed again.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers never claim the same sample.
    SQLite takes no row locks: one process owns an embedded database. The claim's
    ``lease_until`` is its token: the write-back only touches rows still holding it.
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
    claimed = []
    for row in rows:
        if row.attempts >= MAX_ATTEMPTS:
            log.error("sample %s failed: %d attempts ran out", row.decision_id, row.attempts)
            row.status, row.lease_until = "failed", None
            continue
        row.status, row.lease_until, row.attempts = "claimed", lease, row.attempts + 1
        claimed.append(row)
    await session.commit()
    return claimed


def _insert_ignore(dialect: str, table: type) -> sa.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


TRANSIENT_BACKOFF_S = 30.0
# Claims of one sample before it is failed for good (crashes, lost leases, transient errors).
MAX_ATTEMPTS = 5

SHADOW_SALT = ":shadow"
"""Salt of the hash that splits an escalated class's samples on a non-reference model."""

SHADOW_FRACTION = 0.5
"""Share of an escalated class's samples on a non-reference model graded as shadow probes."""

SHADOW_MAX_TOKENS = 2048
"""Output cap of the cheaper model's answer in a shadow probe (tokens)."""


def shadow_model(policy: Policy, sample: Sample, entry: RoutingEntry | None) -> str | None:
    """The cheaper model whose answer a shadow probe grades for ``sample``, or None (a normal
    grade of the served answer).

    A sample is a shadow sample when its class's routing-table ``entry`` is ``escalated`` on the
    sample's model (read when the grading job runs), the ladder has a cheaper model
    (``policy.previous_model(sample.model)``), and either the sample's model is the class's
    reference model (there is nothing else to compare), or the decision id's salted hash point
    ``sample_point(decision_id + ":shadow")`` is below :data:`SHADOW_FRACTION` (one half,
    deterministic, so a retried grade makes the same choice). The salted point is independent of
    the sampling point (``sample_point(decision_id) < sample_rate``), so the split stays one half
    whatever the class's sample rate was or becomes. With no cheaper model the sample is graded
    normally.
    """
    if entry is None or entry.status != "escalated" or entry.model != sample.model:
        return None
    cheaper = policy.previous_model(sample.model)
    if cheaper is None:
        return None
    if sample.model == policy.reference_model(sample.task_class):
        return cheaper
    if sample_point(sample.decision_id + SHADOW_SALT) < SHADOW_FRACTION:
        return cheaper
    return None


@dataclass(frozen=True, slots=True)
class _Graded:
    """One sample's grading: the reference model, the result or the provider error, and for a
    shadow probe the cheaper model and the tokens its answer used."""

    sample: Sample
    reference: str
    result: GradeResult | None
    error: ProviderError | None
    shadow: str | None = None
    shadow_usage: Usage | None = None


async def _grade_one(
    sample: Sample,
    policy: Policy,
    env: GraderEnv,
    gate: asyncio.Semaphore,
    shadow: str | None = None,
) -> _Graded:
    """Grade one sample with its class's grader; a provider failure is returned, not raised.

    With ``shadow`` (a cheaper model, :func:`shadow_model`), first ask that model for its answer
    to the sample's input messages through ``env.provider_for(shadow)``, then grade that answer
    in place of the served one. A cheaper answer that is empty, truncated or refused is a grade
    without a verdict (parse status ``shadow_`` + the reason).
    """
    settings = policy.settings_for(sample.task_class)
    reference = policy.reference_model(sample.task_class)
    view = SampleView(
        sample.decision_id,
        sample.task_class,
        sample.model,
        sample.input_messages,
        sample.output_text,
        sample.item_id,
    )
    shadow_usage: Usage | None = None
    async with gate:
        try:
            if shadow is not None:
                cheap = await reference_answer(view, shadow, env, max_tokens=SHADOW_MAX_TOKENS)
                shadow_usage = cheap.usage
                missing = no_verdict_status(cheap.text, cheap.finish_reason)
                if missing is not None:
                    result = no_verdict(f"shadow_{missing}", cheap.text, Usage())
                    return _Graded(sample, reference, result, None, shadow, shadow_usage)
                view = replace(view, model=shadow, output_text=cheap.text)
            result = await GRADERS[settings.grader].grade(view, settings, reference, env)
        except ProviderError as exc:
            return _Graded(sample, reference, None, exc, shadow)
        except Exception as exc:  # a grader bug or input it cannot read: this sample fails alone
            log.exception("grader %s failed on %s", settings.grader, sample.decision_id)
            error = ProviderError(f"grader error: {type(exc).__name__}: {exc}", transient=False)
            return _Graded(sample, reference, None, error, shadow)
    return _Graded(sample, reference, result, None, shadow, shadow_usage)


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
    attempt requeues the sample once (field case J2); the second attempt's grade is final.

    Shadow samples (:func:`shadow_model`) are graded on the cheaper model's answer and stored
    with ``model`` = the cheaper model and ``shadow`` = true; their tokens and ``cost_usd`` add
    the cheaper model's call (priced at its catalog price) to the reference model's calls. That
    is grading spend: it creates no outcome and no serving cost."""
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
            classes = sorted({s.task_class for s in samples})
            entries = {
                e.task_class: e
                for e in (
                    await session.exec(
                        select(RoutingEntry).where(col(RoutingEntry.task_class).in_(classes))
                    )
                ).all()
            }
        if not samples or policy is None:
            break
        run.claimed += len(samples)
        gate = asyncio.Semaphore(concurrency)
        outcomes = await asyncio.gather(
            *(
                _grade_one(s, policy, env, gate, shadow_model(policy, s, entries.get(s.task_class)))
                for s in samples
            )
        )
        async with sessions() as session:
            dialect = dialect_of(session)
            ids = [s.decision_id for s in samples]
            mine = select(Sample).where(col(Sample.decision_id).in_(ids))
            if dialect == "postgresql":
                mine = mine.with_for_update()
            rows = {r.decision_id: r for r in (await session.exec(mine)).all()}
            for graded in outcomes:
                sample, reference, result, error = (
                    graded.sample,
                    graded.reference,
                    graded.result,
                    graded.error,
                )
                row = rows[sample.decision_id]
                if row.status != "claimed" or row.lease_until != sample.lease_until:
                    # Our lease ran out and another worker took the sample: its result stands.
                    run.lost_leases += 1
                    continue
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
                if graded.shadow is not None:
                    # The cheaper model's answer, at its own catalog price (grading spend).
                    cheap_usage = graded.shadow_usage or Usage()
                    cheap_cost = cost_usd(cheap_usage, catalog.get(graded.shadow))
                    cost = None if cost is None or cheap_cost is None else cost + cheap_cost
                    result = replace(result, usage=add_usage(result.usage, cheap_usage))
                run.cost_usd += cost or 0.0
                if _requeue_without_verdict(row, result, cost):
                    run.retried += 1
                    continue
                tokens_in, tokens_out, cost = _spend(row, result, cost)
                await session.exec(
                    _insert_ignore(dialect, Grade).values(
                        decision_id=sample.decision_id,
                        task_class=sample.task_class,
                        model=graded.shadow or sample.model,
                        shadow=graded.shadow is not None,
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
