"""The cache's books per task class over a time range (UTC, ``since`` inclusive, ``until``
exclusive), from ``cache_lookup`` and the grades of sampled hits, aggregated in the database.

Per class: lookups, hits, misses, bypasses; the hit rate (hits / lookups that were not
bypassed) and the false-hit rate (``disagree`` of graded hits), each with its 95% Wilson
interval (:func:`evaluator.stats.wilson`); what the hits saved (nano-USD: each replaced call
priced at the routed model from the entry's usage; hits without a price are counted in
``unpriced_hits``, never summed as 0) and the embedding spend (nano-USD; NULL rows counted in
``unpriced_embeddings``).

Two more reads for the reports (:mod:`evaluator.report`): :func:`cache_settings`, what each
class's cache does now (the guard's threshold for the class's current route, else the
policy's), and :func:`replaced_calls`, the token counts of the calls the hits replaced (each
hit's entry's usage), so the "everything on the premium model" counterfactual can price them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from evaluator.stats import RateEstimate, wilson
from router.cache.models import CacheClassState, CacheEntry, CacheLookup
from router.errors import InvalidInput
from router.models import RoutingEntry
from router.policy import ModelPrice
from router.pricing import Usage, normalize_usage
from router.table import latest_policy, price_period


@dataclass(frozen=True, slots=True)
class CacheBooks:
    """One class's cache books (see the module doc); money in nano-USD."""

    task_class: str
    lookups: int
    hits: int
    misses: int
    bypasses: int
    hit_rate: RateEstimate
    false_hit_rate: RateEstimate
    saved_nusd: int
    unpriced_hits: int
    embedding_nusd: int
    unpriced_embeddings: int


def _window(
    when: sa.ColumnElement[datetime], since: datetime | None, until: datetime | None
) -> list[sa.ColumnElement[bool]]:
    """``since <= when < until`` (only the bounds given)."""
    return [
        *([when >= since] if since is not None else []),
        *([when < until] if until is not None else []),
    ]


async def cache_books(
    session: AsyncSession, since: datetime | None, until: datetime | None
) -> list[CacheBooks]:
    """The books of every class with lookups in ``[since, until)`` (None: unbounded), by class
    name."""
    lookup = CacheLookup.__table__  # type: ignore[attr-defined]
    grade = Grade.__table__  # type: ignore[attr-defined]
    is_hit = lookup.c.outcome == "hit"
    window = _window(lookup.c.created_at, since, until)
    counts = (
        sa.select(
            lookup.c.task_class,
            sa.func.count(),
            sa.func.sum(sa.case((is_hit, 1), else_=0)),
            sa.func.sum(sa.case((lookup.c.outcome == "miss", 1), else_=0)),
            sa.func.sum(sa.case((lookup.c.outcome == "bypass", 1), else_=0)),
            sa.func.coalesce(sa.func.sum(sa.case((is_hit, lookup.c.saved_nusd), else_=0)), 0),
            sa.func.sum(sa.case((sa.and_(is_hit, lookup.c.saved_nusd.is_(None)), 1), else_=0)),
            sa.func.coalesce(sa.func.sum(lookup.c.embedding_nusd), 0),
            sa.func.sum(sa.case((lookup.c.embedding_nusd.is_(None), 1), else_=0)),
        )
        .where(*window)
        .group_by(lookup.c.task_class)
    )
    graded = (
        sa.select(
            lookup.c.task_class,
            sa.func.sum(sa.case((grade.c.verdict == "disagree", 1), else_=0)),
            sa.func.count(),
        )
        .select_from(lookup.join(grade, grade.c.decision_id == lookup.c.decision_id))
        .where(
            is_hit,
            *window,
            col(grade.c.verdict).in_(("agree", "disagree")),
        )
        .group_by(lookup.c.task_class)
    )
    conn = await session.connection()
    verdicts = {r[0]: (int(r[1]), int(r[2])) for r in (await conn.execute(graded)).all()}
    books = []
    for row in (await conn.execute(counts)).all():
        task_class, n, hits, misses, bypasses = row[0], *(int(v or 0) for v in row[1:5])
        k, graded_n = verdicts.get(task_class, (0, 0))
        books.append(
            CacheBooks(
                task_class=task_class,
                lookups=n,
                hits=hits,
                misses=misses,
                bypasses=bypasses,
                hit_rate=wilson(hits, hits + misses),
                false_hit_rate=wilson(k, graded_n),
                saved_nusd=int(row[5] or 0),
                unpriced_hits=int(row[6] or 0),
                embedding_nusd=int(row[7] or 0),
                unpriced_embeddings=int(row[8] or 0),
            )
        )
    return sorted(books, key=lambda b: b.task_class)


@dataclass(frozen=True, slots=True)
class CacheSetting:
    """What one class's cache does now, as the gateway's stage decides it
    (:meth:`router.cache.stage.CacheStage._state`): ``threshold``, the cosine similarity a
    semantic hit needs; ``source``, ``guard`` (the guard's ``cache_class_state`` row, learnt on
    the class's current model and routing-entry version) or ``policy`` (the policy's
    ``cache_threshold``: no row, or one learnt on an earlier route); ``status``, ``on``,
    ``off: guard`` (the guard switched it off on this route) or ``off: policy`` (``cache =
    false``); ``updated_at``, when the guard last wrote the row in force (None: policy).
    ``TIERWISE_CACHE`` itself is a process setting the database does not know."""

    task_class: str
    threshold: float
    source: str
    status: str
    updated_at: datetime | None = None


async def cache_settings(session: AsyncSession, classes: Iterable[str]) -> dict[str, CacheSetting]:
    """:class:`CacheSetting` of each of ``classes`` under the latest applied policy and the
    routing table now; empty before any policy."""
    names = sorted(set(classes))
    policy = await latest_policy(session)
    if policy is None or not names:
        return {}
    entries = {
        e.task_class: e
        for e in (
            await session.exec(select(RoutingEntry).where(col(RoutingEntry.task_class).in_(names)))
        ).all()
    }
    states = {
        s.task_class: s
        for s in (
            await session.exec(
                select(CacheClassState).where(col(CacheClassState.task_class).in_(names))
            )
        ).all()
    }
    out = {}
    for name in names:
        settings = policy.settings_for(name)
        entry, state = entries.get(name), states.get(name)
        current = (
            state is not None
            and entry is not None
            and (state.model, state.route_version) == (entry.model, entry.version)
        )
        if current and state is not None:
            setting = CacheSetting(
                name,
                state.threshold,
                "guard",
                "on" if state.enabled else "off: guard",
                state.updated_at,
            )
        else:
            setting = CacheSetting(name, settings.cache_threshold, "policy", "on")
        if not settings.cache:
            setting = CacheSetting(
                name, setting.threshold, setting.source, "off: policy", setting.updated_at
            )
        out[name] = setting
    return out


@dataclass(frozen=True, slots=True)
class ReplacedCalls:
    """The calls the hits of a range replaced: ``hits`` counted; ``tokens``, per index of the
    price history passed in (-1: before its first price), the sum over those hits of their
    entries' usage (tokens; an entry hit twice counts twice); ``unreadable``, hits whose entry
    is gone or has no readable usage (left out of ``tokens``, never counted as 0 tokens)."""

    hits: int = 0
    tokens: dict[int, Usage] = field(default_factory=dict)
    unreadable: int = 0


async def replaced_calls(
    session: AsyncSession,
    since: datetime | None,
    until: datetime | None,
    history: Sequence[ModelPrice],
) -> ReplacedCalls:
    """The token counts of the calls the hits in ``[since, until)`` (by the lookup's time)
    replaced, per period of ``history`` (a model's price history, oldest first,
    :func:`router.table.price_period`). One GROUP BY (entry, period) in the database, then one
    row per entry hit: linear in the entries hit, not in the hits."""
    lookup = CacheLookup.__table__  # type: ignore[attr-defined]
    entry = CacheEntry.__table__  # type: ignore[attr-defined]
    period = price_period(lookup.c.created_at, history) if history else None
    keys = [lookup.c.entry_id, *([] if period is None else [period.label("period")])]
    grouped = (
        sa.select(*keys, sa.func.count().label("n"))
        .where(lookup.c.outcome == "hit", *_window(lookup.c.created_at, since, until))
        .group_by(*([lookup.c.entry_id] if period is None else [lookup.c.entry_id, period]))
        .subquery()
    )
    stmt = sa.select(
        grouped.c.n,
        grouped.c.period if period is not None else sa.literal(-1),
        entry.c.usage,
    ).select_from(grouped.outerjoin(entry, entry.c.id == grouped.c.entry_id))
    conn = await session.connection()
    hits = unreadable = 0
    sums: dict[int, list[int]] = {}
    for n_raw, period_raw, usage_raw in (await conn.execute(stmt)).all():
        n = int(n_raw)
        hits += n
        try:
            if usage_raw is None:
                raise InvalidInput("no usage")
            usage = normalize_usage(usage_raw)
        except InvalidInput:
            unreadable += n
            continue
        acc = sums.setdefault(int(period_raw), [0, 0, 0, 0])
        acc[0] += n * usage.input_tokens
        acc[1] += n * usage.cached_input_tokens
        acc[2] += n * usage.cache_write_tokens
        acc[3] += n * usage.output_tokens
    return ReplacedCalls(hits, {k: Usage(*v) for k, v in sorted(sums.items())}, unreadable)
