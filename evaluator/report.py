"""Reports over what the service recorded: per-class quality and the books.

The books (exact nano-USD sums, shown in USD): serving cost = sum of priced outcomes; embedding
spend = the semantic cache's lookups' embedding cost (:mod:`evaluator.cache_books`, by the
lookup's time); grading spend = sum of grade costs; premium cost = every outcome's tokens priced
at the policy's premium model (the "send everything to the premium model" counterfactual, same
token counts, each outcome at the premium price in effect at its decision's time, rounded half
to even once per price period); a cache hit's outcome has no tokens (no call was made), so its
tokens there are those of the call it replaced (its entry's usage, at the lookup's time:
without tierwise that request would have gone to the premium model too); savings = premium -
serving - embedding - grading. Unpriced outcomes, hits whose replaced call cannot be read and
unpriced embedding lookups are counted, never summed as 0. Grading spend includes shadow
probes (the cheaper model's answer and its grading, ``Grade.shadow``); a class's graded counts,
verdict-less grades and position flips are its served answers' own grades only, never shadow
probes (those are the way back's evidence, shown in the rule state's ``dn``/``dk``).

A time range ``[since, until)`` (aware UTC datetimes, None = open; parse a command line's with
:func:`evaluator.costs.parse_range`) narrows what is counted the way the cost view does:
decisions by their time (routed), outcomes by theirs, grades by the time they were graded,
escalation events by theirs. The rule's state and a class's model are always as of now.
:func:`cache_reports` gives the semantic cache per class (the books of
:func:`evaluator.cache_books.cache_books` and the class's threshold now).
:func:`report_json` gives the whole report as JSON-able data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.cache_books import (
    CacheBooks,
    CacheSetting,
    cache_books,
    cache_settings,
    replaced_calls,
)
from evaluator.escalation import ClassState, class_states
from evaluator.grading import waiting_on_budget
from evaluator.models import EscalationEvent, Grade, GradingBatchItem
from evaluator.stats import RateEstimate
from router.models import Decision, Outcome, Sample
from router.money import usd
from router.pricing import Usage, cost_nusd
from router.table import latest_policy, price_history, price_period


@dataclass(frozen=True, slots=True)
class ClassReport:
    """One task class: traffic, graded evidence in the current window, status, model now."""

    task_class: str
    routed: int
    graded_total: int
    state: ClassState
    last_escalation: EscalationEvent | None
    # Grades without a verdict (invalid/refused) by parse status (their reason),
    # and pairwise grades whose two orders disagreed (position flips); all time.
    no_verdict: Mapping[str, int] = field(default_factory=dict)
    position_flips: int = 0

    @property
    def invalid_total(self) -> int:
        """Grades without a verdict (invalid + refused)."""
        return sum(self.no_verdict.values())

    @property
    def invalid_rate(self) -> float | None:
        """invalid / all grades of the class; None before any grade."""
        total = self.graded_total + self.invalid_total
        return self.invalid_total / total if total else None

    @property
    def flip_rate(self) -> float | None:
        """Position flips / graded (agree + disagree); only judge_pairwise grades can flip."""
        return self.position_flips / self.graded_total if self.graded_total else None

    @property
    def label(self) -> str:
        """``escalated`` / ``baseline`` / ``not yet conclusive`` (too few, or above the threshold
        but not proven) / ``on reference model`` (never sampled: nothing to compare it with) /
        ``held: judge uncalibrated`` (the rule says escalate, but the class's judge has no kappa
        or one below the floor; the quality endpoint says which) / ``pinned`` / ``probation``."""
        if self.state.status != "baseline":
            return self.state.status
        if self.state.decision.action == "escalate" and self.state.blocked is not None:
            return "held: judge uncalibrated"
        if self.state.decision.action in ("too_few", "not_conclusive"):
            return "not yet conclusive"
        if self.state.decision.action == "on_reference":
            return "on reference model"
        return "baseline"


@dataclass(frozen=True, slots=True)
class Books:
    """Spend in nano-USD (exact; the ``*_usd`` properties give USD), and counts of what could
    not be priced."""

    outcomes: int
    unpriced_outcomes: int
    serving_nusd: int
    grading_nusd: int
    unpriced_grades: int
    premium_model: str
    premium_nusd: int
    waiting_on_budget: int = 0
    """Samples queued that wait for a grading budget with room (not graded yet, not dropped)."""
    embedding_nusd: int = 0
    """The cache's embedding spend (lookups' ``embedding_nusd``), apart from serving."""
    unpriced_embeddings: int = 0
    cache_hits: int = 0
    """Requests the cache answered (their replaced calls are in ``premium_nusd``)."""
    unreadable_hits: int = 0
    """Hits whose replaced call (the entry's usage) could not be read: not in ``premium_nusd``."""

    @property
    def total_nusd(self) -> int:
        """serving + embedding + grading."""
        return self.serving_nusd + self.embedding_nusd + self.grading_nusd

    @property
    def savings_nusd(self) -> int:
        return self.premium_nusd - self.total_nusd

    @property
    def serving_usd(self) -> float:
        return usd(self.serving_nusd) or 0.0

    @property
    def grading_usd(self) -> float:
        return usd(self.grading_nusd) or 0.0

    @property
    def embedding_usd(self) -> float:
        return usd(self.embedding_nusd) or 0.0

    @property
    def premium_usd(self) -> float:
        return usd(self.premium_nusd) or 0.0

    @property
    def total_usd(self) -> float:
        return usd(self.total_nusd) or 0.0

    @property
    def savings_usd(self) -> float:
        return usd(self.savings_nusd) or 0.0


def _in_range(when: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    """Conditions ``since <= when < until`` (only the bounds given)."""
    conds = []
    if since is not None:
        conds.append(when >= since)
    if until is not None:
        conds.append(when < until)
    return conds


async def class_reports(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> list[ClassReport]:
    """A report per class, sorted by class name, counting ``[since, until)`` (module doc)."""
    graded_in = _in_range(col(Grade.created_at), since, until)
    routed = dict(
        (
            await session.exec(
                select(Decision.task_class, func.count())
                .where(*_in_range(col(Decision.created_at), since, until))
                .group_by(col(Decision.task_class))
            )
        ).all()
    )
    graded = dict(
        (
            await session.exec(
                select(Grade.task_class, func.count())
                .where(
                    col(Grade.verdict).in_(("agree", "disagree")),
                    col(Grade.shadow).is_(False),
                    *graded_in,
                )
                .group_by(col(Grade.task_class))
            )
        ).all()
    )
    no_verdict: dict[str, dict[str, int]] = {}
    for task_class, status, count in (
        await session.exec(
            select(Grade.task_class, Grade.parse_status, func.count())
            .where(
                col(Grade.verdict).in_(("invalid", "refused")),
                col(Grade.shadow).is_(False),
                *graded_in,
            )
            .group_by(col(Grade.task_class), col(Grade.parse_status))
        )
    ).all():
        no_verdict.setdefault(task_class, {})[status] = int(count)
    flips = dict(
        (
            await session.exec(
                select(Grade.task_class, func.count())
                .where(
                    col(Grade.parse_status) == "position_flip",
                    col(Grade.shadow).is_(False),
                    *graded_in,
                )
                .group_by(col(Grade.task_class))
            )
        ).all()
    )
    events: dict[str, EscalationEvent] = {}
    for event in (
        await session.exec(
            select(EscalationEvent)
            .where(*_in_range(col(EscalationEvent.created_at), since, until))
            .order_by(col(EscalationEvent.id))
        )
    ).all():
        events[event.task_class] = event
    return [
        ClassReport(
            task_class=s.task_class,
            routed=int(routed.get(s.task_class, 0)),
            graded_total=int(graded.get(s.task_class, 0)),
            state=s,
            last_escalation=events.get(s.task_class),
            no_verdict=no_verdict.get(s.task_class, {}),
            position_flips=int(flips.get(s.task_class, 0)),
        )
        for s in await class_states(session)
    ]


async def books(
    session: AsyncSession,
    *,
    now: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Books:
    """The books over the outcomes and grades recorded in ``[since, until)`` (default: all),
    and the samples waiting on a grading budget at ``now`` (default: now, UTC)."""
    policy = await latest_policy(session)
    if policy is None:
        return Books(0, 0, 0, 0, 0, "", 0)
    premium_model = policy.spec.premium_model
    history = (await price_history(session, premium_model)).get(premium_model, ())
    if not history and premium_model in policy.prices:  # not applied yet: the file's price
        history = (policy.prices[premium_model],)
    conn = await session.connection()
    period = price_period(col(Decision.created_at), history)
    rows = (
        await conn.execute(
            sa.select(
                period,
                func.count(),
                func.count(col(Outcome.cost_nusd)),
                func.coalesce(func.sum(Outcome.cost_nusd), 0),
                func.coalesce(func.sum(Outcome.input_tokens), 0),
                func.coalesce(func.sum(Outcome.cached_input_tokens), 0),
                func.coalesce(func.sum(Outcome.cache_write_tokens), 0),
                func.coalesce(func.sum(Outcome.output_tokens), 0),
            )
            .select_from(Outcome)
            .join(
                Decision,
                sa.and_(
                    col(Decision.id) == col(Outcome.decision_id),
                    col(Decision.created_at) == col(Outcome.decided_at),
                ),
            )
            .where(*_in_range(col(Outcome.created_at), since, until))
            .group_by(period)
        )
    ).all()
    grades = (
        await conn.execute(
            sa.select(
                func.count(),
                func.count(col(Grade.cost_nusd)),
                func.coalesce(func.sum(Grade.cost_nusd), 0),
            ).where(*_in_range(col(Grade.created_at), since, until))
        )
    ).one()
    # Per premium price period: every input token (cached or not) and output tokens.
    tokens: dict[int, tuple[int, int]] = {}
    n = priced = serving = 0
    for k, count, priced_k, serving_k, tin, tcached, twrite, tout in rows:
        n, priced = n + int(count or 0), priced + int(priced_k or 0)
        serving += int(serving_k or 0)
        i, o = tokens.get(int(k), (0, 0))
        tokens[int(k)] = (i + int(tin) + int(tcached) + int(twrite), o + int(tout))
    replaced = await replaced_calls(session, since, until, history)
    for k, usage in replaced.tokens.items():
        i, o = tokens.get(k, (0, 0))
        tokens[k] = (i + usage.total_input_tokens, o + usage.output_tokens)
    premium = 0
    for k, (tin, tout) in tokens.items():
        all_input = Usage(input_tokens=tin, output_tokens=tout)
        premium += cost_nusd(all_input, history[k] if k >= 0 else None) or 0
    cache = await cache_books(session, since, until)
    return Books(
        outcomes=n,
        unpriced_outcomes=n - priced,
        serving_nusd=serving,
        grading_nusd=int(grades[2] or 0),
        unpriced_grades=int(grades[0]) - int(grades[1]),
        premium_model=premium_model,
        premium_nusd=premium,
        waiting_on_budget=await waiting_on_budget(session, now=now),
        embedding_nusd=sum(b.embedding_nusd for b in cache),
        unpriced_embeddings=sum(b.unpriced_embeddings for b in cache),
        cache_hits=replaced.hits,
        unreadable_hits=replaced.unreadable,
    )


@dataclass(frozen=True, slots=True)
class CacheClassReport:
    """The semantic cache of one class over a range: its books (:class:`CacheBooks`: lookups,
    hits, hit rate and false-hit rate with 95% Wilson intervals, nano-USD saved and spent on
    embeddings) and what its cache does now (:class:`CacheSetting`; None before any policy)."""

    books: CacheBooks
    setting: CacheSetting | None

    @property
    def task_class(self) -> str:
        return self.books.task_class


async def cache_reports(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> list[CacheClassReport]:
    """The cache per class with lookups in ``[since, until)`` (by the lookup's time), sorted by
    class name; empty when the cache saw no call in the range."""
    the_books = await cache_books(session, since, until)
    settings = await cache_settings(session, (b.task_class for b in the_books))
    return [CacheClassReport(b, settings.get(b.task_class)) for b in the_books]


@dataclass(frozen=True, slots=True)
class VerdictDelay:
    """How long grading took in one mode: ``grades`` counted, and the median and 90th
    percentile (linear interpolation) of ``grade.created_at - sample.created_at``, seconds."""

    mode: str
    grades: int
    median_s: float
    p90_s: float


async def verdict_delays(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None
) -> list[VerdictDelay]:
    """Time from sample to verdict per grading mode, over the grades of ``[since, until)``
    (default: every grade; shadow probes included): ``batch`` for a grade whose sample had a
    call in a provider batch (``grading_batch_item``), ``realtime`` for the rest (a
    batch-graded sample whose grader needed no call is graded at once, so it counts there).
    Modes without grades are left out; sorted by mode. Batch grading slows escalation by
    this much."""
    in_batch = (
        sa.select(sa.literal(1))
        .where(col(GradingBatchItem.decision_id) == col(Grade.decision_id))
        .exists()
    )
    stmt = (
        sa.select(col(Grade.created_at), col(Sample.created_at), in_batch)
        .join(Sample, col(Sample.decision_id) == col(Grade.decision_id))
        .where(*_in_range(col(Grade.created_at), since, until))
    )
    conn = await session.connection()
    waits: dict[str, list[float]] = {}
    for graded_at, sampled_at, batched in (await conn.execute(stmt)).all():
        mode = "batch" if batched else "realtime"
        waits.setdefault(mode, []).append((graded_at - sampled_at).total_seconds())
    return [
        VerdictDelay(
            mode,
            len(xs),
            float(np.median(xs)),
            float(np.percentile(xs, 90)),
        )
        for mode, xs in sorted(waits.items())
    ]


def report_json(
    reports: list[ClassReport],
    the_books: Books,
    delays: list[VerdictDelay],
    cache: list[CacheClassReport] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The report as JSON-able data: ``since``/``until`` (ISO, null = open); ``classes``, per
    class its traffic, graded and no-verdict counts, position flips, status, model now, the
    current window's evidence (n, k, rate, Wilson interval, confidence), the rule's action and
    reason, and the last escalation event's id; ``books`` (USD and exact nano-USD, counts);
    ``verdict_delays`` (seconds); ``cache``, per class with cache lookups (:func:`cache_json`;
    an empty list without any)."""

    def iso(at: datetime | None) -> str | None:
        return None if at is None else at.isoformat()

    classes = []
    for r in reports:
        est = r.state.decision.estimate
        classes.append(
            {
                "task_class": r.task_class,
                "routed": r.routed,
                "graded": r.graded_total,
                "no_verdict": r.invalid_total,
                "no_verdict_by_status": dict(r.no_verdict),
                "position_flips": r.position_flips,
                "status": r.label,
                "model": r.state.model,
                "window_start": iso(r.state.window_start),
                "window_n": est.n,
                "window_k": est.k,
                "rate": est.rate,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "confidence": est.confidence,
                "rule_action": r.state.decision.action,
                "reason": r.state.decision.reason,
                "blocked": r.state.blocked,
                "last_escalation_id": None if r.last_escalation is None else r.last_escalation.id,
            }
        )
    b = the_books
    return {
        "since": iso(since),
        "until": iso(until),
        "classes": classes,
        "books": {
            "outcomes": b.outcomes,
            "unpriced_outcomes": b.unpriced_outcomes,
            "unpriced_grades": b.unpriced_grades,
            "waiting_on_budget": b.waiting_on_budget,
            "premium_model": b.premium_model,
            "cache_hits": b.cache_hits,
            "unreadable_hits": b.unreadable_hits,
            "unpriced_embeddings": b.unpriced_embeddings,
            "serving_usd": b.serving_usd,
            "embedding_usd": b.embedding_usd,
            "grading_usd": b.grading_usd,
            "total_usd": b.total_usd,
            "premium_usd": b.premium_usd,
            "savings_usd": b.savings_usd,
            "serving_nusd": b.serving_nusd,
            "embedding_nusd": b.embedding_nusd,
            "grading_nusd": b.grading_nusd,
            "total_nusd": b.total_nusd,
            "premium_nusd": b.premium_nusd,
            "savings_nusd": b.savings_nusd,
        },
        "verdict_delays": [
            {"mode": d.mode, "grades": d.grades, "median_s": d.median_s, "p90_s": d.p90_s}
            for d in delays
        ],
        "cache": [cache_json(c) for c in cache or []],
    }


def cache_json(report: CacheClassReport) -> dict[str, Any]:
    """One class's cache as JSON-able data: counts (``lookups``, ``hits``, ``misses``,
    ``bypasses``, ``graded_hits``, ``false_hits``, ``unpriced_hits``, ``unpriced_embeddings``);
    ``hit_rate`` (hits / (hits + misses)) and ``false_hit_rate`` (false / graded hits), each
    with its 95% Wilson interval (``*_ci``: ``[low, high]``, null without data); ``saved``
    and ``embedding`` in USD (``*_usd``) and exact nano-USD (``*_nusd``); the setting now
    (``threshold``, ``threshold_source``, ``cache_status``, ``state_updated_at``; null
    before any policy)."""
    b, s = report.books, report.setting

    def ci(est: RateEstimate) -> list[float] | None:
        if est.rate is None or est.ci_low is None or est.ci_high is None:
            return None
        return [est.ci_low, est.ci_high]

    return {
        "task_class": b.task_class,
        "lookups": b.lookups,
        "hits": b.hits,
        "misses": b.misses,
        "bypasses": b.bypasses,
        "hit_rate": b.hit_rate.rate,
        "hit_rate_ci": ci(b.hit_rate),
        "graded_hits": b.false_hit_rate.n,
        "false_hits": b.false_hit_rate.k,
        "false_hit_rate": b.false_hit_rate.rate,
        "false_hit_rate_ci": ci(b.false_hit_rate),
        "saved_usd": usd(b.saved_nusd) or 0.0,
        "saved_nusd": b.saved_nusd,
        "unpriced_hits": b.unpriced_hits,
        "embedding_usd": usd(b.embedding_nusd) or 0.0,
        "embedding_nusd": b.embedding_nusd,
        "unpriced_embeddings": b.unpriced_embeddings,
        "threshold": None if s is None else s.threshold,
        "threshold_source": None if s is None else s.source,
        "cache_status": None if s is None else s.status,
        "state_updated_at": (
            None if s is None or s.updated_at is None else s.updated_at.isoformat()
        ),
    }
