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
  threshold goes to :data:`HIGHEST` instead, and waits there for them): the class is not
  served from the cache until its route changes;
- **lower** one step when the upper bound at t is at or under the target (the rate is proven
  under it, so this needs hundreds of graded hits: about 300 with none false), it is at the
  next threshold down too, and at least :data:`MIN_BAND_N` graded hits lie between the two:
  slowly, and only on that evidence (never below where hits were ever graded).

Only the evidence of the class's current route counts (its model and routing-entry version):
an escalation retires the entries and starts the threshold again from the policy's
``cache_threshold``. Each change writes a ``cache_guard_event`` with the counts it was decided
on.

**Per-entry bars** (:func:`raise_entry_bars`, in the same run and transaction). A false hit
also says something about the one entry that served it: the entry's answer was wrong for a
request that close to its own. For every false hit (verdict ``disagree``) on a live entry of
its class's current route:

- a **semantic** hit at similarity s raises the entry's ``min_similarity`` to s + :data:`STEP`
  (the stage needs similarity >= max(class threshold, entry bar), so the same near-duplicate
  misses next time and closer ones still hit); the bar never goes down, and several false hits
  of one entry take the highest;
- an **exact** hit (the cached answer was wrong for the very request it was made for), or a
  bar that would pass 1.0 (s > 1 - :data:`STEP`: the class rule's :data:`HIGHEST` too),
  **forgets** the entry (its row is deleted).

Nothing is stored about which grades were handled: the state says it. A grade whose entry's bar
is already at or above s + STEP, or whose entry is gone, changes nothing, so a second run over
the same grades writes nothing (the UPDATE and DELETE say by their row count whether they
changed anything, so two workers running at once write one event). Each change is a
``cache_guard_event`` of its own: action ``entry-raise`` (``from_threshold`` the entry's bar
before, or the class threshold the false hit was served under when it had none;
``to_threshold`` the new bar) or ``entry-forget`` (``to_threshold`` NULL); ``k`` of ``n`` the
entry's false and graded hits on record with their Wilson interval; ``evidence`` one item per
false hit that decided it (``entry_id``, ``decision_id``, ``match``, ``similarity``,
``threshold``). The serving process's in-memory store reads these events to apply them
(:meth:`router.cache.store.MemoryStore.sync`). These bars are the per-entry half of what vCache
(arXiv 2502.03771) learns per embedding; the rule is tierwise's own, and simpler: one false hit
moves an entry's bar, no estimate of its own.

**Purge** (:func:`purge_expired_entries`, job ``cache-purge``): ``cache_entry`` rows past
``expires_at`` (never served again, but holding the caller's query and answer text) are
deleted in transactions of ``batch_size`` rows, at most ``max_batches`` a run.
``cache_lookup`` rows are kept: they hold no text (the per-class ``text_retention_days``
is about text), and they are the guard's evidence and the books' facts; the only retention
of such facts, ``partition_retention_days``, drops whole day partitions of decisions and
outcomes on PostgreSQL, and ``cache_lookup`` is not partitioned.

The idea of learning thresholds from verified hits with an error bound comes from vCache
(arXiv 2502.03771); the rule here is tierwise's own and per class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from evaluator.stats import wilson
from router.cache.models import CacheClassState, CacheEntry, CacheGuardEvent, CacheLookup
from router.cache.store import ENTRY_FORGET, ENTRY_RAISE, raise_bar_statement
from router.db import utcnow
from router.dialect import skip_locked
from router.jobs import Job
from router.table import RoutingSnapshot, load_snapshot

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
        if n < MIN_OFF_N:
            if threshold >= HIGHEST - 1e-9:
                return None  # at the top already: switching off waits for MIN_OFF_N hits
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


CLOCK_SLACK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class _FalseHit:
    decision_id: str
    entry_id: str
    task_class: str
    model: str
    route_version: int
    match: str | None
    similarity: float | None
    threshold: float | None
    bar: float | None

    @property
    def wanted(self) -> float | None:
        """The bar this false hit asks of its entry; None: forget the entry."""
        if self.match != "semantic" or self.similarity is None:
            return None
        bar = self.similarity + STEP
        return bar if bar <= 1.0 else None

    def evidence(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "decision_id": self.decision_id,
            "match": self.match,
            "similarity": self.similarity,
            "threshold": self.threshold,
        }


async def _false_hits(session: AsyncSession, now: datetime) -> list[_FalseHit]:
    """The graded false hits (verdict disagree, not a shadow probe) whose entry still lives
    at ``now``, ordered by entry and decision. Bounded by the oldest live entry: a hit is
    never older than the entry that served it (less :data:`CLOCK_SLACK`, as the two rows'
    times may come from different processes' clocks)."""
    oldest = (
        await session.exec(
            select(sa.func.min(CacheEntry.created_at)).where(col(CacheEntry.expires_at) > now)
        )
    ).one()
    if oldest is None:
        return []
    conn = await session.connection()
    rows = (
        await conn.execute(
            sa.select(
                col(CacheLookup.decision_id),
                col(CacheLookup.entry_id),
                col(CacheLookup.task_class),
                col(CacheLookup.model),
                col(CacheLookup.route_version),
                col(CacheLookup.match),
                col(CacheLookup.similarity),
                col(CacheLookup.threshold),
                col(CacheEntry.min_similarity),
            )
            .join(Grade, col(Grade.decision_id) == col(CacheLookup.decision_id))
            .join(CacheEntry, col(CacheEntry.id) == col(CacheLookup.entry_id))
            .where(
                col(CacheLookup.outcome) == "hit",
                col(CacheLookup.created_at) >= oldest - CLOCK_SLACK,
                col(Grade.verdict) == "disagree",
                col(Grade.shadow).is_(False),
                col(CacheEntry.expires_at) > now,
            )
            .order_by(col(CacheLookup.entry_id), col(CacheLookup.decision_id))
        )
    ).all()
    return [
        _FalseHit(
            str(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            int(r[4]),
            r[5],
            None if r[6] is None else float(r[6]),
            None if r[7] is None else float(r[7]),
            None if r[8] is None else float(r[8]),
        )
        for r in rows
    ]


async def _entry_counts(
    session: AsyncSession, entry_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Per entry: (false hits, graded hits) on record."""
    if not entry_ids:
        return {}
    false_hit = sa.case((col(Grade.verdict) == "disagree", 1), else_=0)
    rows = (
        await session.exec(
            select(CacheLookup.entry_id, sa.func.sum(false_hit), sa.func.count())
            .join(Grade, col(Grade.decision_id) == col(CacheLookup.decision_id))
            .where(
                col(CacheLookup.entry_id).in_(list(entry_ids)),
                col(CacheLookup.outcome) == "hit",
                col(Grade.verdict).in_(("agree", "disagree")),
                col(Grade.shadow).is_(False),
            )
            .group_by(col(CacheLookup.entry_id))
        )
    ).all()
    return {str(e): (int(k or 0), int(n or 0)) for e, k, n in rows}


async def raise_entry_bars(
    session: AsyncSession, snapshot: RoutingSnapshot, now: datetime
) -> list[CacheGuardEvent]:
    """The per-entry half of the guard (module doc): for each live entry of its class's
    current route with a false hit its bar does not yet exclude, raise the bar to the highest
    false hit's similarity + :data:`STEP`, or forget the entry (an exact false hit, or a bar
    past 1.0). Adds the changes and their ``cache_guard_event`` rows to ``session``; the
    caller commits. Returns the events (empty when nothing is left to change)."""
    by_entry: dict[str, list[_FalseHit]] = {}
    for hit in await _false_hits(session, now):
        route = snapshot.entries.get(hit.task_class)
        if route is not None and (route.model, route.version) != (hit.model, hit.route_version):
            continue  # a retired route: the entry never serves again
        by_entry.setdefault(hit.entry_id, []).append(hit)
    plans: list[tuple[str, float | None, list[_FalseHit]]] = []
    for entry_id, hits in by_entry.items():
        wanted = [h.wanted for h in hits]
        if any(w is None for w in wanted):
            plans.append((entry_id, None, [h for h in hits if h.wanted is None]))
            continue
        highest = max(w for w in wanted if w is not None)
        current = hits[0].bar
        if current is not None and current >= highest:
            continue
        new = [h for h in hits if current is None or (h.wanted or 0.0) > current]
        plans.append((entry_id, highest, new))
    counts = await _entry_counts(session, [e for e, _, _ in plans])
    conn = await session.connection()
    events: list[CacheGuardEvent] = []
    for entry_id, bar, hits in plans:
        first = hits[0]
        if bar is None:
            done = await conn.execute(sa.delete(CacheEntry).where(col(CacheEntry.id) == entry_id))
        else:
            done = await conn.execute(raise_bar_statement(entry_id, bar))
        if done.rowcount != 1:
            continue  # another run got there first
        settings = snapshot.policy.settings_for(first.task_class)
        served_under = [h.threshold for h in hits if h.threshold is not None]
        before = (
            first.bar
            if first.bar is not None
            else max(served_under, default=settings.cache_threshold)
        )
        k, n = counts.get(entry_id, (len(hits), len(hits)))
        est = wilson(k, n, CONFIDENCE)
        worst = max(hits, key=lambda h: h.similarity if h.similarity is not None else 2.0)
        at = "an exact match" if worst.match != "semantic" else f"similarity {worst.similarity:.4f}"
        if bar is None:
            why = (
                "the cached answer was wrong for its own request"
                if worst.match != "semantic"
                else f"a bar of {(worst.similarity or 0.0) + STEP:.4f} would pass 1.0"
            )
            reason = (
                f"entry {entry_id}: false hit {worst.decision_id} at {at}; {why}: forgotten "
                f"({k} false of {n} graded hits of the entry)"
            )
        else:
            reason = (
                f"entry {entry_id}: false hit {worst.decision_id} at {at}: the entry now needs "
                f"similarity >= {bar:.4f} (was {before:.4f}; {k} false of {n} graded hits of "
                f"the entry)"
            )
        event = CacheGuardEvent(
            task_class=first.task_class,
            model=first.model,
            action=ENTRY_FORGET if bar is None else ENTRY_RAISE,
            from_threshold=before,
            to_threshold=bar,
            k=k,
            n=n,
            rate=est.rate,
            lower=est.ci_low,
            upper=est.ci_high,
            confidence=CONFIDENCE,
            target=settings.cache_false_hit_target,
            reason=reason,
            evidence=[h.evidence() for h in hits],
            created_at=now,
        )
        session.add(event)
        events.append(event)
        log.info("cache guard: %s %s: %s", first.task_class, event.action, reason)
    return events


async def run_cache_guard(
    sessions: async_sessionmaker[AsyncSession], *, at: datetime | None = None
) -> list[CacheGuardEvent]:
    """One pass of the guard: over every class with graded cache hits on its current route
    (the per-class state updated and an event written for each change), then over the
    entries with false hits (:func:`raise_entry_bars`), in one transaction. Returns the
    events, the classes' first."""
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
        events.extend(await raise_entry_bars(session, snapshot, now))
        await session.commit()
    return events


def cache_guard_job(sessions: async_sessionmaker[AsyncSession], *, interval_s: float) -> Job:
    """The guard as a scheduled job (every ``interval_s`` seconds). A run's summary:
    ``changes`` (class thresholds changed), ``entries_raised`` and ``entries_forgotten``."""

    async def run(tick: datetime) -> object:
        events = await run_cache_guard(sessions, at=tick)
        entry = [e.action for e in events if e.action in (ENTRY_RAISE, ENTRY_FORGET)]
        return {
            "changes": len(events) - len(entry),
            "entries_raised": entry.count(ENTRY_RAISE),
            "entries_forgotten": entry.count(ENTRY_FORGET),
        }

    return Job("cache-guard", run, interval_s)


PURGE_JOB = "cache-purge"
PURGE_BATCH = 1000
"""Expired entries one purge transaction deletes."""


@dataclass
class CachePurgeRun:
    """What one purge did: ``deleted`` expired entries in ``batches`` transactions; ``more``:
    it stopped at its batch limit with expired entries left (the next run goes on)."""

    deleted: int = 0
    batches: int = 0
    more: bool = False

    def summary(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "batches": self.batches, "more": self.more}


async def purge_expired_entries(
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: datetime | None = None,
    batch_size: int = PURGE_BATCH,
    max_batches: int = 100,
) -> CachePurgeRun:
    """Delete the ``cache_entry`` rows expired at ``now`` (``expires_at <= now``: the stores
    never return them), oldest expiry first, ``batch_size`` rows a transaction (over the
    ``expires_at`` index; rows another transaction holds are skipped on PostgreSQL, so two
    workers share the work instead of waiting), at most ``max_batches`` transactions.
    ``cache_lookup`` rows are kept (module doc)."""
    run = CachePurgeRun()
    now = now or utcnow()
    while True:
        if run.batches >= max_batches:
            run.more = True
            break
        async with sessions() as session:
            pick = (
                select(CacheEntry.id)
                .where(col(CacheEntry.expires_at) <= now)
                .order_by(col(CacheEntry.expires_at))
                .limit(batch_size)
            )
            ids = list((await session.exec(skip_locked(session, pick))).all())
            if ids:
                conn = await session.connection()
                await conn.execute(sa.delete(CacheEntry).where(col(CacheEntry.id).in_(ids)))
            await session.commit()
        if not ids:
            break
        run.batches += 1
        run.deleted += len(ids)
        if len(ids) < batch_size:
            break
    if run.deleted:
        log.info("cache purge: %s", run.summary())
    return run


def cache_purge_job(
    sessions: async_sessionmaker[AsyncSession], *, interval_s: float, batch_size: int = PURGE_BATCH
) -> Job:
    """The purge as a scheduled job (every ``interval_s`` seconds). Not claimed once per tick:
    deleting expired rows twice deletes nothing the second time."""

    async def run(tick: datetime) -> object:
        return (await purge_expired_entries(sessions, batch_size=batch_size)).summary()

    return Job(PURGE_JOB, run, interval_s)
