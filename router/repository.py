"""The data plane's SQL: decisions, outcomes, samples and the class registry. Functions here
only execute and flush; the caller (the request scope, the batch writer) commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.dialect import insert_ignore, insert_rows_ignore
from router.models import Decision, Outcome, Sample, TaskClass


async def decisions_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, Decision]:
    """The stored decisions among ``ids``, by id."""
    rows = await session.exec(select(Decision).where(col(Decision.id).in_(ids)))
    return {d.id: d for d in rows.all()}


async def with_outcome(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """The decision ids among ``ids`` that already have an outcome."""
    rows = await session.exec(select(Outcome.decision_id).where(col(Outcome.decision_id).in_(ids)))
    return set(rows.all())


async def with_sample(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """The decision ids among ``ids`` that already have a sample."""
    rows = await session.exec(select(Sample.decision_id).where(col(Sample.decision_id).in_(ids)))
    return set(rows.all())


async def register_classes(session: AsyncSession, first_seen: dict[str, datetime]) -> None:
    """Add task classes to the class registry (``task_class``), each with the time it was
    first routed; classes already there are kept as they are."""
    if first_seen:
        await session.exec(
            insert_ignore(session, TaskClass),
            params=[{"name": c, "first_routed_at": first_seen[c]} for c in sorted(first_seen)],
        )


def first_seen(rows: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    """Each task class among decision ``rows`` -> the earliest ``created_at`` (UTC)."""
    first: dict[str, datetime] = {}
    for row in rows:
        at = row["created_at"]
        if row["task_class"] not in first or at < first[row["task_class"]]:
            first[row["task_class"]] = at
    return first


async def insert_decisions(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """Insert decision rows (a decision already stored is kept) and register their classes."""
    rows = list(rows)
    if not rows:
        return
    await register_classes(session, first_seen(rows))
    # In id order, as the batch writer inserts them (one lock order: no deadlock).
    rows.sort(key=lambda row: str(row["id"]))
    table = Decision.__table__  # type: ignore[attr-defined]
    await session.exec(insert_rows_ignore(session, table, rows), params=rows)


async def insert_outcome(session: AsyncSession, **values: Any) -> None:
    """Insert one outcome (the first report of a decision stands)."""
    await session.exec(insert_ignore(session, Outcome).values(**values))


async def queue_sample(session: AsyncSession, **values: Any) -> None:
    """Queue one sample for grading (a decision's first sample stands)."""
    await session.exec(insert_ignore(session, Sample).values(**values))
