"""The escalation job's settled verdict counts (``rule_state.counts``): grades written more than
an hour ago are cached by the run, later runs and the quality endpoint read only the grades
written since, and the counts stay those of the whole window."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation import class_state, run_escalation, window_counts
from evaluator.escalation._repository import SETTLE
from evaluator.models import Grade, RuleStateRow
from router.db import utcnow
from router.models import RoutingEntry
from tests.conftest import apply, policy_named
from tests.seeding import seed_grades

MINI = "gpt-4o-mini"


async def test_settled_counts_are_cached_and_new_grades_added(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_named("default"))
    async with sessions() as session:
        entry = await session.get(RoutingEntry, "classify")
        assert entry is not None
        since = entry.changed_at
    await seed_grades(sessions, "classify", MINI, n=40, k=1)
    two_hours_ago = utcnow() - timedelta(hours=2)
    async with sessions() as session:
        await session.exec(sa.update(Grade).values(created_at=two_hours_ago))
        await session.commit()
    await seed_grades(sessions, "classify", MINI, n=10, k=1)  # written now: not settled yet

    before = utcnow()
    await run_escalation(sessions)
    async with sessions() as session:
        row = await session.get(RuleStateRow, "classify")
        assert row is not None and row.counts is not None
        own = row.counts["own"]
        assert own["key"] == {"model": MINI, "since": since.isoformat(), "shadow": False}
        assert own["counts"] == {"agree": 39, "disagree": 1}  # the 40 older grades only
        through = own["through"]
        assert before - SETTLE <= type(before).fromisoformat(through) <= utcnow() - SETTLE
        assert row.counts["shadow"] is None  # not escalated: no shadow probes read

    await seed_grades(sessions, "classify", MINI, n=5, k=2)
    async with sessions() as session:
        state = await class_state(session, "classify")
        full = await window_counts(session, "classify", MINI, since)
    # The cache (40) plus every grade written since (15) is the whole window's count.
    assert full == {"agree": 51, "disagree": 4}
    assert (state.decision.estimate.n, state.decision.estimate.k) == (55, 4)


async def test_a_cache_of_another_window_is_not_used(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_named("default"))
    await seed_grades(sessions, "classify", MINI, n=20, k=0)
    async with sessions() as session:
        await session.exec(sa.update(Grade).values(created_at=utcnow() - timedelta(hours=3)))
        await session.commit()
    await run_escalation(sessions)
    async with sessions() as session:
        row = await session.get(RuleStateRow, "classify")
        assert row is not None and row.counts is not None
        assert row.counts["own"]["counts"] == {"agree": 20}
        # A cache of another window start (the class changed) does not apply, however large.
        own = row.counts["own"]
        stale = {**own, "key": {**own["key"], "since": "2001-01-01T00:00:00+00:00"}}
        row.counts = {"own": {**stale, "counts": {"agree": 1000}}, "shadow": None}
        await session.commit()
        state = await class_state(session, "classify")
    assert (state.decision.estimate.n, state.decision.estimate.k) == (20, 0)
    # The same cache with the right key is used: its counts stand for the settled grades.
    async with sessions() as session:
        row = await session.get(RuleStateRow, "classify")
        assert row is not None and row.counts is not None
        row.counts = {"own": {**own, "counts": {"agree": 1000}}, "shadow": None}
        await session.commit()
        state = await class_state(session, "classify")
    assert (state.decision.estimate.n, state.decision.estimate.k) == (1000, 0)
