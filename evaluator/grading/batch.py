"""Batch grading: the grading calls of batch-graded classes (``grading = "batch"``) go through the
providers' batch APIs at the catalog's ``batch_discount``.

Two jobs share the work. :func:`submit_batches` claims queued samples of batch classes (a
lease of :data:`BATCH_LEASE_S`, longer than the 24 h window), asks each sample's grader for its
first stage (a shadow probe's cheaper answer comes first, as stage "shadow"), groups the calls
per model into batches within the provider's limits and submits them. :func:`poll_batches`
looks at every open batch; once one has ended it books each answered item's cost once
(``grading_cost``, unique per provider batch id and custom id), keeps the answer on its item,
and when every call of a sample's stage is answered calls the grader again: the next stage is
submitted at once (a pairwise judge's two orders after its reference answer), a grade is written
with the summed booked cost. An item that errored permanently fails its sample (no grade: out of
the rate); one that expired, was canceled, errored transiently or is missing from an ended
batch sends its sample back to the queue, and so does a batch still open past its deadline.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import (
    GRADERS,
    GraderEnv,
    GradeResult,
    SampleView,
    Stage,
    answer_request,
    no_verdict,
)
from evaluator.grading._attempts import requeue_without_verdict, write_grade
from evaluator.grading._job import SHADOW_MAX_TOKENS, _answering_model
from evaluator.grading._modes import batch_classes
from evaluator.grading._queue import claim_samples
from evaluator.models import GradingBatch, GradingBatchItem, GradingCost
from evaluator.parsing import no_verdict_status
from router.db import utcnow
from router.dialect import insert_ignore
from router.errors import InvalidInput
from router.models import RoutingEntry, Sample
from router.money import usd
from router.policy import Policy
from router.pricing import Usage, cost_nusd
from router.providers import ProviderError
from router.providers.base import ChatRequest, ChatResponse
from router.providers.batch import BatchItemError, plan_batches
from router.table import latest_policy

log = logging.getLogger(__name__)

BATCH_LEASE_S = 26 * 3600.0
"""A batch-graded sample's claim, s: the providers' 24 h window and two hours to read results."""

BATCH_DEADLINE_S = 25 * 3600.0
"""A batch still open this long after submission is abandoned, s: its samples are queued again."""

SHADOW_KEY = "shadow"
"""The request key of a shadow probe's cheaper answer (the stage before the grader's own)."""


@dataclass
class BatchRun:
    """What one submit or poll run did: batches submitted and ended, items answered, grades
    written, samples failed and requeued, ids rejected, and the booked spend (USD)."""

    submitted: int = 0
    ended: int = 0
    answered: int = 0
    graded: int = 0
    failed: int = 0
    requeued: int = 0
    rejected: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    cost_nusd: int = 0

    @property
    def cost_usd(self) -> float:
        """``cost_nusd`` (nano-USD) in USD."""
        return usd(self.cost_nusd) or 0.0


def custom_id_of(decision_id: str, stage: int, key: str) -> str:
    """A custom id both APIs accept (at most 64 of ``[a-zA-Z0-9_-]``): ``g`` + 16 hex digits
    of the decision id's BLAKE2b, the stage number and the request key."""
    digest = hashlib.blake2b(decision_id.encode(), digest_size=8).hexdigest()
    return f"g{digest}-{stage}-{key}"[:64]


def _view(sample: Sample) -> SampleView:
    return SampleView(
        sample.decision_id,
        sample.task_class,
        sample.model,
        sample.input_messages,
        sample.output_text,
        sample.item_id,
    )


def _next(
    sample: Sample,
    policy: Policy,
    env: GraderEnv,
    shadow: str | None,
    answers: dict[str, ChatResponse],
) -> Stage | GradeResult:
    """The sample's next stage or its grade, given every answer so far (by key)."""
    settings = policy.settings_for(sample.task_class)
    reference = policy.reference_model(sample.task_class)
    view = _view(sample)
    if shadow is not None:
        cheap = answers.get(SHADOW_KEY)
        if cheap is None:
            probe = answer_request(view, shadow, max_tokens=SHADOW_MAX_TOKENS)
            return Stage({SHADOW_KEY: probe})
        missing = no_verdict_status(cheap.text, cheap.finish_reason)
        if missing is not None:
            return no_verdict(f"shadow_{missing}", cheap.text, Usage())
        view = replace(view, model=shadow, output_text=cheap.text)
        answers = {k: v for k, v in answers.items() if k != SHADOW_KEY}
    return GRADERS[settings.grader].step(view, settings, reference, env, answers)


def _dump(response: ChatResponse) -> dict[str, Any]:
    u = response.usage
    return {
        "text": response.text,
        "model": response.model,
        "finish_reason": response.finish_reason,
        "usage": [
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens,
            u.output_tokens,
            u.reasoning_tokens,
        ],
    }


def _load(data: dict[str, Any]) -> ChatResponse:
    return ChatResponse(
        text=data["text"],
        model=data["model"],
        finish_reason=data["finish_reason"],
        usage=Usage(*data["usage"]),
    )


@dataclass(frozen=True, slots=True)
class _Call:
    decision_id: str
    lease_until: datetime
    stage: int
    key: str
    request: ChatRequest


async def _submit(
    session: AsyncSession, env: GraderEnv, calls: list[_Call], run: BatchRun
) -> list[_Call]:
    """Submit ``calls`` per model in batches within each provider's limits and record them;
    returns the calls whose submission failed (their samples are the caller's to release)."""
    by_model: dict[str, list[_Call]] = defaultdict(list)
    for call in calls:
        by_model[call.request.model].append(call)
    failed: list[_Call] = []
    now = utcnow()
    for model, group in sorted(by_model.items()):
        provider = env.provider_for(model)
        limits = provider.batch_limits
        ids = {custom_id_of(c.decision_id, c.stage, c.key): c for c in group}
        items = [(custom_id, c.request) for custom_id, c in ids.items()]
        if limits is None:
            log.warning("model %s: provider %s has no batch API", model, provider.name)
            failed.extend(group)
            continue
        try:
            chunks = plan_batches(items, limits, provider.batch_size_of)
        except InvalidInput as exc:  # one request larger than a whole batch may be
            log.warning("model %s: calls cannot be batched (%s); failing them", model, exc)
            failed.extend(group)
            continue
        for chunk in chunks:
            try:
                batch_id = await provider.submit_batch(chunk)
            except ProviderError as exc:
                log.warning("submitting %d calls for %s failed: %s", len(chunk), model, exc)
                failed.extend(ids[c] for c, _ in chunk)
                continue
            batch = GradingBatch(
                provider=provider.name,
                model=model,
                provider_batch_id=batch_id,
                submitted_at=now,
                deadline=now + timedelta(seconds=BATCH_DEADLINE_S),
                requests=len(chunk),
            )
            session.add(batch)
            await session.flush()
            assert batch.id is not None
            for custom_id, _ in chunk:
                c = ids[custom_id]
                session.add(
                    GradingBatchItem(
                        batch_id=batch.id,
                        custom_id=custom_id,
                        decision_id=c.decision_id,
                        stage=c.stage,
                        key=c.key,
                        lease_until=c.lease_until,
                    )
                )
            run.submitted += 1
    return failed


async def _context(
    session: AsyncSession, classes: list[str]
) -> tuple[Policy | None, dict[str, RoutingEntry]]:
    policy = await latest_policy(session)
    entries = {
        e.task_class: e
        for e in (
            await session.exec(
                select(RoutingEntry).where(col(RoutingEntry.task_class).in_(classes))
            )
        ).all()
    }
    return policy, entries


async def submit_batches(
    sessions: async_sessionmaker[AsyncSession],
    env: GraderEnv,
    *,
    limit: int = 10_000,
) -> BatchRun:
    """Claim up to ``limit`` queued samples of batch-graded classes (lease
    :data:`BATCH_LEASE_S`) and submit the first stage of each one's grading in provider batches
    (one model per batch). A sample whose submission failed goes back to the queue; a grader
    that needs no call grades at once. Returns counts."""
    run = BatchRun()
    async with sessions() as session:
        policy = await latest_policy(session)
        if policy is None:
            return run
        classes = await batch_classes(session, policy)
        if not classes:
            return run
        samples = await claim_samples(
            session, limit=limit, lease_s=BATCH_LEASE_S, only_classes=classes
        )
        if not samples:
            return run
        policy, entries = await _context(session, sorted({s.task_class for s in samples}))
        assert policy is not None
        rows = {
            r.decision_id: r
            for r in (
                await session.exec(
                    select(Sample).where(
                        col(Sample.decision_id).in_([s.decision_id for s in samples])
                    )
                )
            ).all()
        }
        calls: list[_Call] = []
        for sample in samples:
            row = rows[sample.decision_id]
            assert row.lease_until is not None
            shadow = _answering_model(policy, row, entries)
            try:
                nxt = _next(row, policy, env, shadow, {})
            except Exception:
                log.exception("grader failed on %s", row.decision_id)
                row.status, row.lease_until = "failed", None
                run.failed += 1
                continue
            if isinstance(nxt, GradeResult):
                await _write_grade(session, policy, row, shadow, nxt, run)
                continue
            stage = 0 if shadow is not None else 1
            calls.extend(
                _Call(row.decision_id, row.lease_until, stage, key, request)
                for key, request in nxt.requests.items()
            )
        for call in await _submit(session, env, calls, run):
            _release(rows[call.decision_id], run)
        await session.commit()
    return run


def _release(row: Sample, run: BatchRun) -> None:
    """Back to the queue (the claim did not use up an attempt of the sample's own)."""
    if row.status == "claimed":
        row.status, row.lease_until = "queued", None
        row.attempts = max(0, row.attempts - 1)
        run.requeued += 1


async def _write_grade(
    session: AsyncSession,
    policy: Policy,
    row: Sample,
    shadow: str | None,
    result: GradeResult,
    run: BatchRun,
) -> None:
    """Write ``row``'s grade with the spend booked for it in ``grading_cost`` under this claim
    (tokens and discounted USD summed), or requeue it once for a grade without a verdict."""
    stmt: Any = sa.select(
        func.coalesce(func.sum(col(GradingCost.input_tokens)), 0),
        func.coalesce(func.sum(col(GradingCost.output_tokens)), 0),
        func.sum(col(GradingCost.cost_nusd)),
        func.count(),
        func.count(col(GradingCost.cost_nusd)),
    ).where(
        col(GradingCost.decision_id) == row.decision_id,
        col(GradingCost.created_at) >= _claimed_at(row),
    )
    booked = (await session.exec(stmt)).one()
    tokens_in, tokens_out, nusd, n, priced = booked
    cost = int(nusd) if n == priced and nusd is not None else (None if n else 0)
    usage = Usage(input_tokens=int(tokens_in), output_tokens=int(tokens_out))
    result = replace(result, usage=usage)
    run.cost_nusd += cost or 0
    if requeue_without_verdict(row, result, cost):
        run.requeued += 1
        return
    await write_grade(session, policy, row, result, cost, answer_of=shadow)
    run.graded += 1
    run.verdicts[result.verdict] = run.verdicts.get(result.verdict, 0) + 1


def _claimed_at(row: Sample) -> datetime:
    """When the current claim began: its lease less :data:`BATCH_LEASE_S`."""
    assert row.lease_until is not None
    return row.lease_until - timedelta(seconds=BATCH_LEASE_S)


async def poll_batches(sessions: async_sessionmaker[AsyncSession], env: GraderEnv) -> BatchRun:
    """Look at every open batch once; read the ones that ended (see the module docstring).
    A poll that fails leaves the batch for the next run (a 404 right after create is
    transient); a batch open past its deadline is abandoned and its samples queued again.
    Returns counts and the spend booked in this run (USD, after the batch discount)."""
    run = BatchRun()
    async with sessions() as session:
        open_batches = (
            await session.exec(
                select(GradingBatch)
                .where(col(GradingBatch.status) == "submitted")
                .order_by(col(GradingBatch.id))
            )
        ).all()
        batch_ids = [b.id for b in open_batches]
    for batch_id in batch_ids:
        async with sessions() as session:
            batch = await session.get(GradingBatch, batch_id)
            assert batch is not None
            await _poll_one(session, env, batch, run)
            await session.commit()
    return run


async def _poll_one(
    session: AsyncSession, env: GraderEnv, batch: GradingBatch, run: BatchRun
) -> None:
    items = (
        await session.exec(
            select(GradingBatchItem).where(col(GradingBatchItem.batch_id) == batch.id)
        )
    ).all()
    pending = {i.custom_id: i for i in items if i.status == "pending"}
    provider = env.provider_for(batch.model)
    now = utcnow()
    try:
        poll = await provider.poll_batch(batch.provider_batch_id, set(pending))
    except ProviderError as exc:
        log.info("batch %s: poll failed: %s", batch.provider_batch_id, exc)
        poll = None
    if poll is None or not poll.ended:
        if poll is not None:
            batch.provider_status = poll.status
        if now > batch.deadline:
            log.warning("batch %s abandoned past its deadline", batch.provider_batch_id)
            batch.status, batch.completed_at = "abandoned", now
            for item in pending.values():
                item.status = "requeued"
            await _settle(session, env, {i.decision_id for i in pending.values()}, run)
        return
    run.rejected += len(poll.rejected)
    policy = await latest_policy(session)
    catalog = {m.name: m for m in policy.spec.models} if policy is not None else {}
    price = catalog.get(batch.model)
    for custom_id, item in pending.items():
        result = poll.results.get(custom_id)
        if isinstance(result, ChatResponse):
            item.status, item.response = "answered", _dump(result)
            cost = cost_nusd(
                result.usage, price, discount=price.batch_discount if price is not None else 0
            )
            await session.exec(
                insert_ignore(session, GradingCost).values(
                    provider_batch_id=batch.provider_batch_id,
                    custom_id=custom_id,
                    decision_id=item.decision_id,
                    model=batch.model,
                    input_tokens=result.usage.total_input_tokens,
                    output_tokens=result.usage.output_tokens,
                    cost_nusd=cost,
                    created_at=now,
                )
            )
            batch.succeeded += 1
            run.answered += 1
        elif isinstance(result, BatchItemError) and result.kind == "errored":
            item.status = "requeued" if result.transient else "failed"
            log.warning("batch item %s errored: %s", custom_id, result.message)
            batch.errored += 1
        else:  # expired, canceled, or never in the results
            item.status = "requeued"
            batch.expired += 1
    batch.status, batch.provider_status, batch.completed_at = "ended", poll.status, now
    run.ended += 1
    await session.flush()
    await _settle(session, env, {i.decision_id for i in pending.values()}, run)


async def _settle(
    session: AsyncSession, env: GraderEnv, decision_ids: set[str], run: BatchRun
) -> None:
    """Move each sample on whose items changed: fail it, queue it again, submit its next
    stage, or write its grade. Only rows still holding the claim the items were made under."""
    if not decision_ids:
        return
    await session.flush()
    policy, _ = await _context(session, [])
    if policy is None:
        return
    rows = (
        await session.exec(select(Sample).where(col(Sample.decision_id).in_(decision_ids)))
    ).all()
    classes = sorted({r.task_class for r in rows})
    _, entries = await _context(session, classes)
    calls: list[_Call] = []
    by_id = {r.decision_id: r for r in rows}
    for row in rows:
        if row.status != "claimed" or row.lease_until is None:
            continue
        items = (
            await session.exec(
                select(GradingBatchItem).where(
                    col(GradingBatchItem.decision_id) == row.decision_id,
                    col(GradingBatchItem.lease_until) == row.lease_until,
                )
            )
        ).all()
        if not items:
            continue
        if any(i.status == "failed" for i in items):
            row.status, row.lease_until = "failed", None
            run.failed += 1
            continue
        if any(i.status == "requeued" for i in items):
            row.status, row.lease_until = "queued", None
            run.requeued += 1
            continue
        if any(i.status == "pending" for i in items):
            continue
        answers = {i.key: _load(i.response) for i in items if i.response is not None}
        shadow = _answering_model(policy, row, entries)
        try:
            nxt = _next(row, policy, env, shadow, answers)
        except Exception:
            log.exception("grader failed on %s", row.decision_id)
            row.status, row.lease_until = "failed", None
            run.failed += 1
            continue
        if isinstance(nxt, GradeResult):
            await _write_grade(session, policy, row, shadow, nxt, run)
            continue
        stage = max(i.stage for i in items) + 1
        calls.extend(
            _Call(row.decision_id, row.lease_until, stage, key, request)
            for key, request in nxt.requests.items()
            if key not in answers
        )
    for call in await _submit(session, env, calls, run):
        _release(by_id[call.decision_id], run)
