"""The compression quality guard: probes graded off the hot path, and each class's compression
stepped back (or forward) by the sequential rule on their verdicts.

**Grading a probe** (:func:`grade_probes`). A probe (``router.compression.models``) holds the
messages as the caller sent them. The answer graded is the one to the compressed messages: the
served answer (a probe), or, for a trial of a stronger level, the answer the served model gives
now to the messages compressed at the probe's ratio (one call). The answer to the
*uncompressed* messages comes from the model the class's ``compression_probe_model`` names
(``model``: the served model, so only the compression differs; ``reference``: the class's
reference model) and is given to the class's grader as its reference answer, so the grader
compares the two (its judge, if it has one, is the class's reference model; ``judge_single``,
which rates one answer alone, is replaced by ``judge_pairwise``). Every call is priced at the
catalog (:func:`router.pricing.cost_nusd`) and booked on the probe as the guard's grading
spend (not under the grading budget: open). A provider failure leaves the probe queued for
the next run (after ``MAX_PROBE_FAILURES`` failures it is ``failed``).

**The rule** (:func:`run_guard`). Per class, the graded verdicts (disagree = 1, agree = 0;
``invalid``/``refused`` never count) of probes at the class's current level feed
:func:`evaluator.sequential.step` with the class's escalation parameters (the same p0, p1,
alpha, beta, limit, forgetting and hysteresis as escalation), and the trials of the next
stronger level feed its way back (the ``shadow`` counts). ``escalate`` steps the compression
back one level (the policy's ratio -> a gentler one -> off; ``router.compression.stage.ratio_at``),
``deescalate`` forward one level; each change starts a fresh rule state and writes a
``compression_event`` with k/n, the Wilson interval, the rule, its statistic, the reason and
the rule state it decided on. Probes once counted are ``counted``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation._state import rule_params
from evaluator.graders import GRADERS, Grader, GraderEnv, GradeResult, SampleView
from evaluator.sequential import RuleState, SequentialDecision, step
from evaluator.stats import wilson
from router.compression.compress import compress_messages
from router.compression.compressors import Options
from router.compression.models import (
    CompressionDay,
    CompressionEvent,
    CompressionProbe,
    CompressionState,
)
from router.compression.stage import LEVELS, ratio_at
from router.db import utcnow
from router.dialect import advisory_lock, skip_locked
from router.jobs import Job
from router.money import usd
from router.policy import ClassSettings, ModelPrice, Policy
from router.pricing import cost_nusd
from router.providers.base import ChatRequest, ChatResponse, Provider, ProviderError
from router.table import latest_policy

log = logging.getLogger(__name__)

MAX_PROBE_FAILURES = 3
"""Provider failures after which a probe is ``failed`` instead of tried again."""

COUNTED_VERDICTS = ("agree", "disagree")
GUARD_JOB = "compression-guard"


class _Metered(Provider):
    """A provider that adds each reply's cost (catalog price of the model asked) to a tally."""

    def __init__(self, inner: Provider, prices: Mapping[str, ModelPrice], tally: list[int]):
        self._inner = inner
        self._prices = prices
        self._tally = tally
        self.name = inner.name
        self.uses_api_ids = inner.uses_api_ids
        self.supports_structured_output = inner.supports_structured_output

    async def complete(self, request: ChatRequest) -> ChatResponse:
        reply = await self._inner.complete(request)
        self._tally[0] += cost_nusd(reply.usage, self._prices.get(request.model)) or 0
        self._tally[1] += reply.usage.total_input_tokens
        self._tally[2] += reply.usage.output_tokens
        return reply


@dataclass
class ProbeRun:
    """What one :func:`grade_probes` run did."""

    graded: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    cost_nusd: int = 0


async def grade_probes(
    sessions: async_sessionmaker[AsyncSession], env: GraderEnv, *, limit: int = 100
) -> ProbeRun:
    """Grade up to ``limit`` queued probes (module doc)."""
    run = ProbeRun()
    async with sessions() as session:
        policy = await latest_policy(session)
        if policy is None:
            return run
        stmt = skip_locked(
            session,
            select(CompressionProbe)
            .where(CompressionProbe.status == "queued")
            .order_by(col(CompressionProbe.created_at))
            .limit(limit),
        )
        probes = list((await session.exec(stmt)).all())
        for probe in probes:
            await _grade_one(probe, policy, env, run)
            session.add(probe)
        await session.commit()
    return run


async def _grade_one(
    probe: CompressionProbe, policy: Policy, env: GraderEnv, run: ProbeRun
) -> None:
    settings = policy.settings_for(probe.task_class)
    # judge_single rates one answer alone; comparing two takes the pairwise judge
    grader = GRADERS["judge_pairwise" if settings.grader == "judge_single" else settings.grader]
    tally = [0, 0, 0]
    prices = policy.prices
    metered = GraderEnv(
        lambda model: _Metered(env.provider_for(model), prices, tally),
        env.items,
        env.judge_prompts,
    )
    judge = policy.reference_model(probe.task_class)
    answerer = probe.model if settings.compression_probe_model == "model" else judge
    try:
        answer = probe.output_text
        if probe.trial:
            squeezed = compress_messages(
                probe.input_messages,
                probe.pipeline,
                probe.ratio,
                guard=probe.guard,
                options=Options(similarity=settings.compression_similarity),
            )
            if squeezed.status != "compressed":
                probe.status = "skipped"
                probe.error = f"nothing to try: {squeezed.reason}"[:500]
                run.skipped += 1
                return
            reply = await metered.provider_for(probe.model).complete(
                ChatRequest(model=probe.model, messages=squeezed.messages, max_tokens=1024)
            )
            answer = reply.text
        view = SampleView(
            probe.decision_id,
            probe.task_class,
            probe.model,
            probe.input_messages,
            answer or "",
        )
        # The uncompressed answer is the grader's reference answer; its judge (if any) is the
        # class's reference model.
        uncompressed = await metered.provider_for(answerer).complete(
            ChatRequest(model=answerer, messages=probe.input_messages, max_tokens=2048)
        )
        grade = await _grade(grader, view, settings, judge, metered, {"reference": uncompressed})
    except ProviderError as exc:
        probe.error = exc.message[:500]
        probe.attempts += 1
        probe.grade_cost_nusd = (probe.grade_cost_nusd or 0) + tally[0]
        probe.grade_input_tokens += tally[1]
        probe.grade_output_tokens += tally[2]
        run.cost_nusd += tally[0]
        if probe.attempts >= MAX_PROBE_FAILURES:
            probe.status = "failed"
            run.failed += 1
        else:
            run.retried += 1
        return
    probe.status = "graded"
    probe.verdict = grade.verdict
    probe.score = grade.score
    probe.parse_status = grade.parse_status
    probe.raw_output = grade.raw_output
    probe.output_text = answer
    probe.grade_cost_nusd = (probe.grade_cost_nusd or 0) + tally[0]
    probe.grade_input_tokens += tally[1]
    probe.grade_output_tokens += tally[2]
    probe.graded_at = utcnow()
    run.graded += 1
    run.cost_nusd += tally[0]


async def _grade(
    grader: Grader,
    view: SampleView,
    settings: ClassSettings,
    judge: str,
    env: GraderEnv,
    answers: dict[str, ChatResponse],
) -> GradeResult:
    """:meth:`Grader.grade` with answers already given (the uncompressed one as
    ``reference``): the grader's remaining stages, each stage's calls at once."""
    while True:
        nxt = grader.step(view, settings, judge, env, answers)
        if isinstance(nxt, GradeResult):
            return nxt
        keys = [k for k in nxt.requests if k not in answers]
        if not keys:
            raise RuntimeError(f"grader {grader.name} asked again for answers it has")
        replies = await asyncio.gather(
            *(env.provider_for(nxt.requests[k].model).complete(nxt.requests[k]) for k in keys)
        )
        answers.update(zip(keys, replies, strict=True))


@dataclass
class GuardRun:
    """What one :func:`run_guard` run did: the classes it looked at, the events it wrote."""

    classes: int = 0
    events: list[CompressionEvent] = field(default_factory=list)
    decisions: dict[str, SequentialDecision] = field(default_factory=dict)


def _event(
    task_class: str,
    at: datetime,
    state: CompressionState,
    to_level: int,
    ratio: float,
    decision: SequentialDecision,
    rule_state: RuleState,
) -> CompressionEvent:
    est = decision.estimate
    return CompressionEvent(
        task_class=task_class,
        at=at,
        from_level=state.level,
        to_level=to_level,
        from_ratio=ratio_at(ratio, state.level),
        to_ratio=ratio_at(ratio, to_level),
        n=est.n,
        k=est.k,
        rate=est.rate,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        rule=decision.rule,
        reason=(
            f"compression {LEVELS[min(state.level, 2)]} -> {LEVELS[min(to_level, 2)]}: "
            f"{decision.reason}"
        ),
        evidence={"rule_state": rule_state.to_dict(), "action": decision.action},
    )


async def run_guard(sessions: async_sessionmaker[AsyncSession], *, at: datetime) -> GuardRun:
    """Feed every graded probe to its class's rule and step levels (module doc)."""
    out = GuardRun()
    async with sessions() as session:
        await advisory_lock(session, GUARD_JOB)  # one run at a time across workers
        policy = await latest_policy(session)
        if policy is None:
            return out
        probes = list(
            (
                await session.exec(
                    skip_locked(
                        session,
                        select(CompressionProbe).where(CompressionProbe.status == "graded"),
                    )
                )
            ).all()
        )
        by_class: dict[str, list[CompressionProbe]] = {}
        for probe in probes:
            by_class.setdefault(probe.task_class, []).append(probe)
        for task_class, rows in sorted(by_class.items()):
            out.classes += 1
            state = await session.get(CompressionState, task_class)
            if state is None:
                state = CompressionState(task_class=task_class, level=0, changed_at=at)
            settings = policy.settings_for(task_class)
            params = rule_params(settings)
            rule_state = (
                RuleState.from_dict(state.rule_state) if state.rule_state else RuleState.fresh(at)
            )
            current = [p for p in rows if not p.trial and p.level == state.level]
            trials = [p for p in rows if p.trial and p.level == state.level - 1]
            n, k = _counts(current)
            tn, tk = _counts(trials)
            new_state, decision = step(rule_state, n, k, at, params, shadow_n=tn, shadow_k=tk)
            out.decisions[task_class] = decision
            to_level = state.level
            if decision.action == "escalate" and state.level < 2:
                to_level = state.level + 1
            elif decision.action == "deescalate" and state.level > 0:
                to_level = state.level - 1
            if to_level != state.level:
                event = _event(
                    task_class, at, state, to_level, settings.compression_ratio, decision, new_state
                )
                session.add(event)
                out.events.append(event)
                state.level = to_level
                state.changed_at = at
                state.rule_state = RuleState.fresh(at).to_dict()
                log.warning("compression guard: %s: %s", task_class, event.reason)
            else:
                state.rule_state = new_state.to_dict()
            state.updated_at = at
            session.add(state)
            for probe in rows:
                probe.status = "counted"
                session.add(probe)
        await session.commit()
    return out


def _counts(probes: list[CompressionProbe]) -> tuple[int, int]:
    counted = [p for p in probes if p.verdict in COUNTED_VERDICTS]
    return len(counted), sum(1 for p in counted if p.verdict == "disagree")


def describe(state: CompressionState, ratio: float) -> dict[str, Any]:
    """A class's guard state for operators: level, its name and ratio, and the rule state."""
    return {
        "task_class": state.task_class,
        "level": state.level,
        "level_name": LEVELS[min(state.level, 2)],
        "ratio": ratio_at(ratio, state.level),
        "changed_at": state.changed_at.isoformat(),
        "rule_state": state.rule_state,
    }


def compression_guard_job(
    sessions: async_sessionmaker[AsyncSession],
    load_env: Callable[[], Awaitable[GraderEnv]],
    *,
    interval_s: float,
) -> Job:
    """Every ``interval_s`` s (the grading interval): grade the queued probes, then feed the
    graded ones to each class's rule (:func:`run_guard`, one run at a time across workers under
    an advisory lock; a probe is counted once, claimed with ``SKIP LOCKED``)."""

    async def run(tick: datetime) -> GuardRun:
        graded = await grade_probes(sessions, await load_env())
        done = await run_guard(sessions, at=utcnow())
        log.info(
            "compression guard: %d probes graded (%d retried, %d failed), %d classes, %d events",
            graded.graded,
            graded.retried,
            graded.failed,
            done.classes,
            len(done.events),
        )
        return done

    return Job(GUARD_JOB, run, interval_s)


async def compression_books(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """The compression books and the guard's state per class over ``[since, until)`` (UTC;
    books by their UTC day, probes by when they were queued). Each class::

        {"task_class", "level", "level_name", "ratio" (None = off), "calls", "compressed",
         "guarded" (sent whole by the extraction guard), "tokens_before", "tokens_after",
         "tokens_saved" (estimated context tokens), "saved_nusd", "saved_usd" (at the served
         model's input price), "probes_graded", "disagree", "disagreement_rate",
         "disagreement_ci" ([low, high], Wilson 95%, over graded probes at any level, None
         without one), "guard_spend_nusd", "guard_spend_usd" (every call the guard made)}

    and ``events``: the latest 100 level changes, newest first. Exact integer sums in SQL.
    """
    policy = await latest_policy(session)
    day = col(CompressionDay.day)
    book_stmt = sa.select(
        col(CompressionDay.task_class),
        func.sum(col(CompressionDay.calls)),
        func.sum(col(CompressionDay.compressed)),
        func.sum(col(CompressionDay.guarded)),
        func.sum(col(CompressionDay.tokens_before)),
        func.sum(col(CompressionDay.tokens_after)),
        func.sum(col(CompressionDay.saved_nusd)),
    ).group_by(col(CompressionDay.task_class))
    if since is not None:
        book_stmt = book_stmt.where(day >= datetime.combine(since.date(), time(), UTC))
    if until is not None:
        book_stmt = book_stmt.where(day < until)
    graded = col(CompressionProbe.status).in_(("graded", "counted"))
    verdict = col(CompressionProbe.verdict)
    probe_stmt = sa.select(
        col(CompressionProbe.task_class),
        func.sum(sa.case((graded & verdict.in_(COUNTED_VERDICTS), 1), else_=0)),
        func.sum(sa.case((graded & (verdict == "disagree"), 1), else_=0)),
        func.coalesce(func.sum(col(CompressionProbe.grade_cost_nusd)), 0),
    ).group_by(col(CompressionProbe.task_class))
    created = col(CompressionProbe.created_at)
    if since is not None:
        probe_stmt = probe_stmt.where(created >= since)
    if until is not None:
        probe_stmt = probe_stmt.where(created < until)
    conn = await session.connection()
    states = {s.task_class: s for s in (await session.exec(select(CompressionState))).all()}
    rows: dict[str, dict[str, Any]] = {}

    def row(task_class: str) -> dict[str, Any]:
        if task_class not in rows:
            state = states.get(task_class)
            level = state.level if state is not None else 0
            ratio = policy.settings_for(task_class).compression_ratio if policy else None
            rows[task_class] = {
                "task_class": task_class,
                "level": level,
                "level_name": LEVELS[min(level, 2)],
                "ratio": None if ratio is None else ratio_at(ratio, level),
                "calls": 0,
                "compressed": 0,
                "guarded": 0,
                "tokens_before": 0,
                "tokens_after": 0,
                "tokens_saved": 0,
                "saved_nusd": 0,
                "probes_graded": 0,
                "disagree": 0,
                "disagreement_rate": None,
                "disagreement_ci": None,
                "guard_spend_nusd": 0,
            }
        return rows[task_class]

    for task_class, calls, compressed, guarded, before, after, saved in (
        await conn.execute(book_stmt)
    ).all():
        r = row(task_class)
        r.update(
            calls=int(calls),
            compressed=int(compressed),
            guarded=int(guarded),
            tokens_before=int(before),
            tokens_after=int(after),
            tokens_saved=int(before) - int(after),
            saved_nusd=int(saved),
        )
    for task_class, n, k, spend in (await conn.execute(probe_stmt)).all():
        r = row(task_class)
        est = wilson(int(k), int(n))
        r.update(
            probes_graded=int(n),
            disagree=int(k),
            disagreement_rate=est.rate,
            disagreement_ci=None if est.ci_low is None else [est.ci_low, est.ci_high],
            guard_spend_nusd=int(spend),
        )
    for r in rows.values():
        r["saved_usd"] = usd(r["saved_nusd"])
        r["guard_spend_usd"] = usd(r["guard_spend_nusd"])
    events = (
        await session.exec(
            select(CompressionEvent).order_by(col(CompressionEvent.id).desc()).limit(100)
        )
    ).all()
    return {
        "classes": [rows[c] for c in sorted(rows)],
        "events": [
            {
                **e.model_dump(exclude={"at"}),
                "at": e.at.isoformat(),
            }
            for e in events
        ],
    }
