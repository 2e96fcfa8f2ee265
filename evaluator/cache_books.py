"""The cache's books per task class over a time range (UTC, ``since`` inclusive, ``until``
exclusive), from ``cache_lookup`` and the grades of sampled hits, aggregated in the database.

Per class: lookups, hits, misses, bypasses; the hit rate (hits / lookups that were not
bypassed) and the false-hit rate (``disagree`` of graded hits), each with its 95% Wilson
interval (:func:`evaluator.stats.wilson`); what the hits saved (nano-USD: each replaced call
priced at the routed model from the entry's usage; hits without a price are counted in
``unpriced_hits``, never summed as 0) and the embedding spend (nano-USD; NULL rows counted in
``unpriced_embeddings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from evaluator.stats import RateEstimate, wilson
from router.cache.models import CacheLookup


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


async def cache_books(
    session: AsyncSession, since: datetime | None, until: datetime | None
) -> list[CacheBooks]:
    """The books of every class with lookups in ``[since, until)`` (None: unbounded), by class
    name."""
    lookup = CacheLookup.__table__  # type: ignore[attr-defined]
    grade = Grade.__table__  # type: ignore[attr-defined]
    is_hit = lookup.c.outcome == "hit"
    window = [
        *([lookup.c.created_at >= since] if since is not None else []),
        *([lookup.c.created_at < until] if until is not None else []),
    ]
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
