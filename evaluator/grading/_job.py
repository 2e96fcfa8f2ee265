"""The grading job: claim a batch, grade it concurrently (shadow probes included), write back the
rows that still hold their lease."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import (
    GRADERS,
    GraderEnv,
    GradeResult,
    SampleView,
    add_usage,
    answer_request,
    no_verdict,
)
from evaluator.grading._attempts import requeue_without_verdict, write_grade
from evaluator.grading._budget import BudgetHeld, GradingBudget, hold
from evaluator.grading._modes import batch_classes
from evaluator.grading._probes import shadow_model
from evaluator.grading._queue import MAX_TRANSIENT_FAILURES, TRANSIENT_BACKOFF_S, claim_samples
from evaluator.parsing import no_verdict_status
from router.db import dialect_of, utcnow
from router.models import RoutingEntry, Sample
from router.money import usd
from router.policy import Policy
from router.pricing import Usage, cost_nusd
from router.providers import Deferred, ProviderError
from router.table import latest_policy

log = logging.getLogger(__name__)

SHADOW_MAX_TOKENS = 2048
"""Output cap of the cheaper model's answer in a shadow probe (tokens)."""


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
    cost_nusd: int = 0
    budget_held: int = 0
    """Samples released back to the queue because a grading budget had no room (not failed)."""
    provider_errors: int = 0
    """Samples whose reference (or shadow) model's provider failed this run (``/readyz``
    reports the reference provider failing when a run had some and graded none)."""

    @property
    def cost_usd(self) -> float:
        """``cost_nusd`` in USD."""
        return usd(self.cost_nusd) or 0.0


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
    grader_failed: bool = False


async def _grade_one(
    sample: Sample,
    policy: Policy,
    env: GraderEnv,
    gate: asyncio.Semaphore,
    shadow: str | None,
    budget: GradingBudget,
) -> _Graded:
    """Grade one sample with its class's grader; a provider failure is returned, not raised.

    With ``shadow`` (a cheaper model, :func:`shadow_model`), first ask that model for its answer
    to the sample's input messages through ``env.provider_for(shadow)``, then grade that answer
    in place of the served one. Every stage's calls go through ``budget`` (sent as they are
    when no grading budget applies; a :class:`BudgetHeld` is returned as the error). A cheaper
    answer that is empty, truncated or refused is a grade
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
                probe = answer_request(view, shadow, max_tokens=SHADOW_MAX_TOKENS)
                cheap = await budget.complete(sample.task_class, probe, env)
                shadow_usage = cheap.usage
                missing = no_verdict_status(cheap.text, cheap.finish_reason)
                if missing is not None:
                    result = no_verdict(f"shadow_{missing}", cheap.text, Usage())
                    return _Graded(sample, reference, result, None, shadow, shadow_usage)
                view = replace(view, model=shadow, output_text=cheap.text)
            result = await budget.grade(GRADERS[settings.grader], view, settings, reference, env)
        except ProviderError as exc:
            return _Graded(sample, reference, None, exc, shadow)
        except Exception as exc:  # a grader bug or input it cannot read: this sample fails alone
            log.exception("grader %s failed on %s", settings.grader, sample.decision_id)
            error = ProviderError(f"grader error: {type(exc).__name__}: {exc}", transient=False)
            return _Graded(sample, reference, None, error, shadow, grader_failed=True)
    return _Graded(sample, reference, result, None, shadow, shadow_usage)


def _answering_model(
    policy: Policy, sample: Sample, entries: dict[str, RoutingEntry]
) -> str | None:
    """The model whose answer is graded in place of the served one: a shadow-mode call's
    routed model (``Sample.answer_model``), else a shadow probe's cheaper model
    (:func:`shadow_model`), else None (the served answer)."""
    if sample.answer_model is not None:
        return sample.answer_model
    return shadow_model(policy, sample, entries.get(sample.task_class))


async def grade_pending(
    sessions: async_sessionmaker[AsyncSession],
    env: GraderEnv,
    *,
    batch_size: int = 200,
    concurrency: int = 8,
    lease_s: float = 600.0,
    max_batches: int | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> GradingRun:
    """Grade queued samples until none are left (or ``max_batches``). Returns counts and the
    grading spend in USD. A transient provider failure leaves the sample claimed for a back-off
    (``TRANSIENT_BACKOFF_S`` x claims) and it is retried in a later run until
    ``MAX_TRANSIENT_FAILURES`` claims, then ``failed``; a
    permanent failure is ``failed`` at once. A :class:`Deferred` sample (a rate-limit hint longer
    than the job's budget) stays claimed until the hinted time and does not use up
    an attempt. A grade without a verdict (invalid/refused) on the first
    attempt requeues the sample once; the second attempt's grade is final.

    Shadow samples (:func:`shadow_model`) are graded on the cheaper model's answer and stored
    with ``model`` = the cheaper model and ``shadow`` = true; their tokens and ``cost_nusd`` add
    the cheaper model's call (priced at its catalog price) to the reference model's calls. That
    is grading spend: it creates no outcome and no serving cost.

    Grading budgets (policy ``grading_budget_usd_per_day``, global and per class, USD per UTC
    day of ``clock``): every stage's calls are reserved first (:mod:`._budget`); a sample whose
    stage does not fit is released to ``queued`` until the next UTC day (or a short retry),
    keeps its attempts and is counted in ``budget_held``."""
    run = GradingRun()
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        async with sessions() as session:
            policy = await latest_policy(session)
            # The real-time and batch paths split here: batch-graded classes are left to the
            # batch jobs (evaluator.grading.batch), which claim them with only_classes.
            batch = await batch_classes(session, policy) if policy is not None else []
            samples = await claim_samples(
                session, limit=batch_size, lease_s=lease_s, now=clock(), skip_classes=batch
            )
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
        budget = GradingBudget(sessions, policy, clock=clock)
        outcomes = await asyncio.gather(
            *(
                _grade_one(s, policy, env, gate, _answering_model(policy, s, entries), budget)
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
                    if not isinstance(error, BudgetHeld) and not graded.grader_failed:
                        run.provider_errors += 1
                    if isinstance(error, BudgetHeld):
                        run.budget_held += 1
                        hold(row, error)
                    elif isinstance(error, Deferred):
                        # Keep it claimed until the provider's hint has passed: the next run
                        # after that picks it up again (claim_samples takes expired leases).
                        run.deferred += 1
                        row.lease_until = now + timedelta(seconds=error.retry_after_s)
                        row.attempts = max(0, row.attempts - 1)
                    elif error.transient and row.attempts < MAX_TRANSIENT_FAILURES:
                        backoff = TRANSIENT_BACKOFF_S * row.attempts
                        row.lease_until = now + timedelta(seconds=backoff)
                    else:
                        run.failed += 1
                        row.status = "failed"
                        log.warning("grading %s failed: %s", sample.decision_id, error)
                    continue
                price = catalog.get(reference)
                cost = cost_nusd(result.usage, price)
                if graded.shadow is not None:
                    # The cheaper model's answer, at its own catalog price (grading spend).
                    cheap_usage = graded.shadow_usage or Usage()
                    cheap_cost = cost_nusd(cheap_usage, catalog.get(graded.shadow))
                    cost = None if cost is None or cheap_cost is None else cost + cheap_cost
                    result = replace(result, usage=add_usage(result.usage, cheap_usage))
                run.cost_nusd += cost or 0
                if requeue_without_verdict(row, result, cost):
                    run.retried += 1
                    continue
                await write_grade(session, policy, row, result, cost, answer_of=graded.shadow)
                run.graded += 1
                run.verdicts[result.verdict] = run.verdicts.get(result.verdict, 0) + 1
            await session.commit()
    return run
