"""The semantic cache's quality guard: per class, the false-hit rate of graded cache hits sets
the similarity threshold semantic hits need.

A hash-chosen share of hits (``cache_sample_rate``) is graded like any cheap answer: the
reference model answers the new request and the class's grader compares that with the cached
answer; a ``disagree`` is a false hit. Each graded hit carries the similarity it hit at
(``cache_lookup.similarity``; 1.0 for an exact match), so for any threshold t the graded hits
at or above t are a sample of the hits t would serve: k(t) false of n(t), with a two-sided
Wilson interval (:func:`evaluator.stats.wilson`, 95%). The rule, over a grid of thresholds in
steps of :data:`STEP` from :data:`LOWEST` to :data:`HIGHEST`:

- **raise** when there is a false hit at the current threshold t and the upper bound of the
  rate at t is above the target: to the lowest grid threshold t' > t at which there is no
  false hit or the upper bound is at or under the target;
- **off** when no grid threshold qualifies (false hits up to :data:`HIGHEST`, or exact matches
  that were wrong) and there are at least :data:`MIN_OFF_N` graded hits at t (with fewer, the
  threshold goes to :data:`HIGHEST` instead): the class is not served from the cache until
  its route changes;
- **lower** one step when the upper bound at t is at or under the target (the rate is proven
  under it, so this needs hundreds of graded hits: about 300 with none false), it is at the
  next threshold down too, and at least :data:`MIN_BAND_N` graded hits lie between the two:
  slowly, and only on that evidence (never below where hits were ever graded).

Only the evidence of the class's current route counts (its model and routing-entry version):
an escalation retires the entries and starts the threshold again from the policy's
``cache_threshold``. Each change writes a ``cache_guard_event`` with the counts it was decided
on. The idea of learning thresholds from verified hits with an error bound comes from vCache
(arXiv 2502.03771); the rule here is tierwise's own and per class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from evaluator.stats import wilson
from router.cache.models import CacheClassState, CacheGuardEvent, CacheLookup
from router.db import utcnow
from router.jobs import Job
from router.table import load_snapshot

log = logging.getLogger(__name__)

STEP = 0.005
"""Grid step of the thresholds the rule considers (cosine similarity)."""

LOWEST = 0.80
"""The lowest threshold the guard lowers to."""

HIGHEST = 0.995
"""The highest threshold: past it, the class's cache is switched off."""

CONFIDENCE = 0.95

MIN_BAND_N = 10
"""Graded hits the guard needs between the next threshold down and the current one before it
lowers into that band: it never lowers to where it has not seen hits graded (hits there are
from before a raise), so it comes back at most to where it started."""

MIN_OFF_N = 30
"""Graded hits at the current threshold the guard needs before it switches a class off; with
fewer, it raises the threshold to :data:`HIGHEST` instead."""


@dataclass(frozen=True, slots=True)
class GuardChange:
    """What the rule decided: ``action`` (raise | lower | off), the new threshold (None for
    off), and the counts at the threshold that decided it."""

    action: str
    from_threshold: float
    to_threshold: float | None
    k: int
    n: int
    rate: float | None
    lower: float | None
    upper: float | None
    reason: str
    evidence: list[dict[str, Any]] = field(default_factory=list)


def _at(sims: np.ndarray[Any, Any], wrong: np.ndarray[Any, Any], t: float) -> tuple[int, int]:
    above = sims >= t - 1e-9
    return int(wrong[above].sum()), int(above.sum())


def guard_rule(
    threshold: float,
    evidence: Sequence[tuple[float, bool]],
    *,
    target: float,
    confidence: float = CONFIDENCE,
) -> GuardChange | None:
    """The rule of the module doc on ``evidence`` (``(similarity, false_hit)`` per graded
    hit) at the current ``threshold``; None when it changes nothing. Pure."""
    if not evidence:
        return None
    sims = np.array([s for s, _ in evidence], dtype=np.float64)
    wrong = np.array([w for _, w in evidence], dtype=bool)
    grid = [round(LOWEST + i * STEP, 6) for i in range(round((HIGHEST - LOWEST) / STEP) + 1)]

    def upper(k: int, n: int) -> float | None:
        return wilson(k, n, confidence).ci_high if n else None

    k, n = _at(sims, wrong, threshold)
    est = wilson(k, n, confidence)
    table = []
    counts = []
    for t in grid:
        tk, tn = _at(sims, wrong, t)
        counts.append((t, tk, tn, upper(tk, tn)))
        table.append({"threshold": t, "k": tk, "n": tn, "upper": upper(tk, tn)})
    if k >= 1 and est.ci_high is not None and est.ci_high > target:
        for t, tk, tn, up in counts:
            if t <= threshold + 1e-9:
                continue
            if tk == 0 or (up is not None and up <= target):
                return GuardChange(
                    "raise",
                    threshold,
                    t,
                    k,
                    n,
                    est.rate,
                    est.ci_low,
                    est.ci_high,
                    f"{k} false of {n} graded hits at similarity >= {threshold:.3f}: upper "
                    f"bound {est.ci_high:.2%} above the target {target:.2%}; at {t:.3f}: {tk} of "
                    f"{tn}",
                    table,
                )
        if n < MIN_OFF_N and threshold < HIGHEST - 1e-9:
            tk, tn = _at(sims, wrong, HIGHEST)
            return GuardChange(
                "raise",
                threshold,
                HIGHEST,
                k,
                n,
                est.rate,
                est.ci_low,
                est.ci_high,
                f"{k} false of {n} graded hits at similarity >= {threshold:.3f}: upper bound "
                f"{est.ci_high:.2%} above the target {target:.2%}; no threshold qualifies yet "
                f"and {n} < {MIN_OFF_N} hits to switch off on: to {HIGHEST} ({tk} of {tn})",
                table,
            )
        return GuardChange(
            "off",
            threshold,
            None,
            k,
            n,
            est.rate,
            est.ci_low,
            est.ci_high,
            f"{k} false of {n} graded hits at similarity >= {threshold:.3f} (upper bound "
            f"{est.ci_high:.2%}) and no threshold up to {HIGHEST} keeps false hits under the "
            f"target {target:.2%}",
            table,
        )
    if est.ci_high is not None and est.ci_high <= target:
        down = round(threshold - STEP, 6)
        if down >= LOWEST - 1e-9:
            dk, dn = _at(sims, wrong, down)
            d_upper = upper(dk, dn)
            band = dn - n
            if d_upper is not None and d_upper <= target and band >= MIN_BAND_N:
                return GuardChange(
                    "lower",
                    threshold,
                    down,
                    k,
                    n,
                    est.rate,
                    est.ci_low,
                    est.ci_high,
                    f"{k} false of {n} graded hits at similarity >= {threshold:.3f}: upper "
                    f"bound {est.ci_high:.2%} under the target {target:.2%}, and {dk} of {dn} "
                    f"(upper {d_upper:.2%}) at {down:.3f}",
                    table,
                )
    return None


async def _evidence(
    session: AsyncSession, task_class: str, model: str, route_version: int
) -> list[tuple[float, bool]]:
    rows = (
        await session.exec(
            select(CacheLookup.similarity, Grade.verdict)
            .join(Grade, col(Grade.decision_id) == col(CacheLookup.decision_id))
            .where(
                col(CacheLookup.task_class) == task_class,
                col(CacheLookup.outcome) == "hit",
                col(CacheLookup.model) == model,
                col(CacheLookup.route_version) == route_version,
                col(Grade.verdict).in_(("agree", "disagree")),
                col(Grade.shadow).is_(False),
            )
        )
    ).all()
    return [(float(s if s is not None else 1.0), v == "disagree") for s, v in rows]


async def run_cache_guard(
    sessions: async_sessionmaker[AsyncSession], *, at: datetime | None = None
) -> list[CacheGuardEvent]:
    """One pass of the guard over every class with graded cache hits on its current route:
    the per-class state updated and an event written for each change, in one transaction.
    Returns the events."""
    now = at or utcnow()
    events: list[CacheGuardEvent] = []
    async with sessions() as session:
        snapshot = await load_snapshot(session)
        if snapshot is None:
            return []
        routes = (
            await session.exec(
                select(CacheLookup.task_class, CacheLookup.model, CacheLookup.route_version)
                .where(col(CacheLookup.outcome) == "hit")
                .distinct()
            )
        ).all()
        for task_class, model, route_version in sorted(routes):
            entry = snapshot.entries.get(task_class)
            current = (entry.model, entry.version) if entry is not None else None
            if current is not None and current != (model, route_version):
                continue  # a retired route: its entries no longer serve
            settings = snapshot.policy.settings_for(task_class)
            state = await session.get(CacheClassState, task_class)
            if state is not None and (state.model != model or state.route_version != route_version):
                state = None
            if state is not None and not state.enabled:
                continue
            threshold = state.threshold if state is not None else settings.cache_threshold
            evidence = await _evidence(session, task_class, model, route_version)
            change = guard_rule(threshold, evidence, target=settings.cache_false_hit_target)
            if change is None:
                continue
            row = await session.get(CacheClassState, task_class)
            if row is None:
                row = CacheClassState(
                    task_class=task_class,
                    threshold=threshold,
                    model=model,
                    route_version=route_version,
                )
            row.model, row.route_version, row.updated_at = model, route_version, now
            row.enabled = change.action != "off"
            row.threshold = change.to_threshold if change.to_threshold is not None else threshold
            session.add(row)
            event = CacheGuardEvent(
                task_class=task_class,
                model=model,
                action=change.action,
                from_threshold=change.from_threshold,
                to_threshold=change.to_threshold,
                k=change.k,
                n=change.n,
                rate=change.rate,
                lower=change.lower,
                upper=change.upper,
                confidence=CONFIDENCE,
                target=settings.cache_false_hit_target,
                reason=change.reason,
                evidence=change.evidence,
                created_at=now,
            )
            session.add(event)
            events.append(event)
            log.info("cache guard: %s %s: %s", task_class, change.action, change.reason)
        await session.commit()
    return events


def cache_guard_job(sessions: async_sessionmaker[AsyncSession], *, interval_s: float) -> Job:
    """The guard as a scheduled job (every ``interval_s`` seconds)."""

    async def run(tick: datetime) -> object:
        events = await run_cache_guard(sessions, at=tick)
        return {"changes": len(events)}

    return Job("cache-guard", run, interval_s)
