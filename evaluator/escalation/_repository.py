"""The escalation job's SQL: verdict counts per window, the rule state rows, the job's tick,
and the table change with its event. Functions here flush; the job or the request commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade, JobRun, RuleStateRow
from evaluator.sequential import RuleState
from router.db import utcnow
from router.dialect import insert_ignore
from router.models import RoutingEntry, TaskClass


async def window_counts(
    session: AsyncSession,
    task_class: str,
    model: str,
    since: datetime,
    *,
    shadow: bool = False,
) -> dict[str, int]:
    """Verdict counts ``{verdict: count}`` for ``task_class`` on ``model`` over samples decided
    at or after ``since``: the served model's own grades, or with ``shadow`` only the shadow
    probes (grades of ``model``'s answers obtained by the grading job for an escalated class,
    ``Grade.shadow``). The two never mix."""
    rows = await session.exec(
        select(Grade.verdict, func.count())
        .where(
            col(Grade.task_class) == task_class,
            col(Grade.model) == model,
            col(Grade.decided_at) >= since,
            col(Grade.shadow) == shadow,
        )
        .group_by(col(Grade.verdict))
    )
    return {verdict: int(count) for verdict, count in rows.all()}


SETTLE = timedelta(hours=1)
"""How long after its ``created_at`` a grade row is taken to be committed (the grading job
writes a grade in one short transaction): grades older than that are "settled" and their
counts are cached in ``rule_state.counts``, so a run reads only the grades of the last hour or
so instead of the whole window (the window of a class that never changes grows forever)."""


async def settled_window_counts(
    session: AsyncSession,
    task_class: str,
    model: str,
    since: datetime,
    *,
    shadow: bool,
    settled: dict[str, Any] | None,
    horizon: datetime,
) -> tuple[dict[str, int], dict[str, Any]]:
    """:func:`window_counts` from a cache: ``settled`` (what an earlier call returned, stored
    in ``rule_state.counts``) holds the counts of the window's grades written before its
    ``through``; only grades written since are read (index ``ix_grade_class_model_created``).
    A cache of another model, window or kind is ignored (a full count). Returns the counts and
    the new cache, settled up to ``horizon`` (UTC; never moved back).

    Exact as long as no grade row commits more than :data:`SETTLE` after its ``created_at``.
    """
    key = {"model": model, "since": since.isoformat(), "shadow": shadow}
    base: dict[str, int] = {}
    through: datetime | None = None
    if settled is not None and settled.get("key") == key:
        base = {str(v): int(n) for v, n in settled["counts"].items()}
        through = datetime.fromisoformat(settled["through"])
        horizon = max(horizon, through)
    is_settled = (col(Grade.created_at) < horizon).label("settled")
    in_window = (col(Grade.decided_at) >= since).label("in_window")
    stmt = select(Grade.verdict, is_settled, in_window, func.count()).where(
        col(Grade.task_class) == task_class,
        col(Grade.model) == model,
        col(Grade.shadow) == shadow,
    )
    if through is None:
        stmt = stmt.where(col(Grade.decided_at) >= since)
    else:
        # The only range condition is on created_at, so even a generic plan of the prepared
        # statement takes ix_grade_class_model_created rather than scanning the window by
        # decided_at; the window's bound is applied by the grouping instead.
        stmt = stmt.where(col(Grade.created_at) >= through)
    rows = await session.exec(stmt.group_by(col(Grade.verdict), is_settled, in_window))
    total, settled_now = dict(base), dict(base)
    for verdict, old, inside, count in rows.all():
        if not inside:
            continue
        total[verdict] = total.get(verdict, 0) + int(count)
        if old:
            settled_now[verdict] = settled_now.get(verdict, 0) + int(count)
    return total, {"key": key, "through": horizon.isoformat(), "counts": settled_now}


def graded_counts(counts: dict[str, int]) -> tuple[int, int]:
    return counts.get("agree", 0) + counts.get("disagree", 0), counts.get("disagree", 0)


async def routed_classes(session: AsyncSession, only: str | None = None) -> set[str]:
    """Task classes the class registry knows (every class ever routed), or just ``only``."""
    stmt = select(TaskClass.name)
    if only is not None:
        stmt = stmt.where(col(TaskClass.name) == only)
    return set((await session.exec(stmt)).all())


async def table_entries(session: AsyncSession, only: str | None = None) -> dict[str, RoutingEntry]:
    """Routing-table rows by class (or just ``only``'s)."""
    stmt = select(RoutingEntry)
    if only is not None:
        stmt = stmt.where(col(RoutingEntry.task_class) == only)
    return {e.task_class: e for e in (await session.exec(stmt)).all()}


async def rule_states(session: AsyncSession, only: str | None = None) -> dict[str, RuleStateRow]:
    """Saved rule states by class (or just ``only``'s)."""
    stmt = select(RuleStateRow)
    if only is not None:
        stmt = stmt.where(col(RuleStateRow.task_class) == only)
    return {r.task_class: r for r in (await session.exec(stmt)).all()}


async def save_state(
    session: AsyncSession,
    row: RuleStateRow | None,
    task_class: str,
    model: str,
    window_start: datetime,
    state: RuleState,
    action: str,
    reason: str,
    counts: dict[str, Any] | None = None,
) -> RuleStateRow:
    """Insert or update the class's rule-state row; ``counts`` is the settled-counts cache
    (:func:`settled_window_counts`; None = none)."""
    if row is None:
        row = RuleStateRow(
            task_class=task_class,
            model=model,
            window_start=window_start,
            state=state.to_dict(),
            action=action,
            reason=reason,
            counts=counts,
        )
        session.add(row)
    else:
        row.model, row.window_start, row.state = model, window_start, state.to_dict()
        row.action, row.reason, row.updated_at = action, reason, utcnow()
        row.counts = counts
    return row


async def claim_tick(session: AsyncSession, job: str, tick: datetime, worker: str) -> bool:
    """Insert this run's ``job_run`` row; False when the tick already has one (another worker
    ran it). The row commits or rolls back with the run."""
    values = {"job": job, "tick": tick, "worker": worker[:128], "started_at": utcnow()}
    conn = await session.connection()
    result = await conn.execute(insert_ignore(session, JobRun).values(**values))
    return bool(result.rowcount == 1)


async def record_tick_result(
    session: AsyncSession, job: str, tick: datetime, result: dict[str, Any]
) -> None:
    """Store what the run of ``job`` at ``tick`` did on its ``job_run`` row."""
    await session.exec(
        sa.update(JobRun)
        .where(col(JobRun.job) == job, col(JobRun.tick) == tick)
        .values(result=result)
    )
