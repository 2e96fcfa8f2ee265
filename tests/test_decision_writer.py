"""The decision batch writer: nothing routed is lost on shutdown or while the database is down."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import make_engine, session_factory
from router.models import Decision
from router.service import Router
from tests.conftest import apply, policy_named

pytestmark = pytest.mark.asyncio


async def count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int((await session.exec(select(func.count()).select_from(Decision))).one())


async def test_stop_writes_every_buffered_decision(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_named("default"))
    router = Router(sessions, flush_interval_s=0.01, flush_size=7)
    await router.start()
    for i in range(1000):
        router.route("classify", i, False, None)
    await router.stop()
    assert await count(sessions) == 1000


async def test_an_unreachable_database_keeps_the_batch(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    await apply(sessions, policy_named("default"))
    router = Router(sessions)
    await router.refresh(force=True)
    for i in range(50):
        router.route("classify", i, False, None)
    if database_url.startswith("sqlite"):
        dead = "sqlite+aiosqlite:////no/such/dir/tierwise.db"
    else:
        dead = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    engine = make_engine(dead)
    router.writer._sessions = session_factory(engine)  # the database goes away
    with pytest.raises(Exception):  # noqa: B017 - driver-specific connection error
        await router.flush()
    await engine.dispose()
    router.writer._sessions = sessions  # and comes back
    assert await router.flush() == 50
    assert await count(sessions) == 50


async def test_an_outcome_writes_its_own_decision_not_the_whole_buffer(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The intake writes the reported decision with its outcome (foreign-key order, one
    transaction) and leaves the rest of the buffer to the batch writer."""
    from router.models import Outcome, TaskClass
    from router.outcomes import OutcomeReport

    await apply(sessions, policy_named("default"))
    router = Router(sessions)
    await router.refresh(force=True)
    decisions = [router.route("classify", i, False, None) for i in range(3)]
    report = OutcomeReport(decisions[1].decision_id, "gpt-4o-mini", "ok", 12.0, None, None, None)
    [result] = await router.record_outcomes([report])
    assert result.stored and router.writer.depth == 3
    async with sessions() as session:
        stored = (await session.exec(select(Decision.id))).all()
        outcomes = (await session.exec(select(Outcome.decision_id))).all()
        classes = (await session.exec(select(TaskClass.name))).all()
    assert (stored, outcomes, classes) == ([decisions[1].decision_id],) * 2 + (["classify"],)
    assert await router.flush() == 3  # the writer's insert of the written one is a no-op
    assert await count(sessions) == 3


async def test_an_outcome_right_after_its_route_is_never_unknown(database_url: str) -> None:
    """However the writer's flushes interleave with the intake (buffered, being written,
    committed), a decision this process made is always found."""
    from tests.conftest import running_service

    async with running_service(database_url, "default", decision_flush_s=0.001) as svc:
        unknown = []
        for i in range(300):
            route = await svc.client.post(
                "/v1/route", json={"task_type": "classify", "input_tokens": i}
            )
            decision_id = route.json()["decision_id"]
            out = await svc.client.post(
                "/v1/outcomes", json={"decision_id": decision_id, "served_model": "gpt-4o-mini"}
            )
            if out.status_code != 200:
                unknown.append((i, out.status_code))
        await svc.router.flush()
    assert unknown == []
    engine = make_engine(database_url)
    assert await count(session_factory(engine)) == 300
    await engine.dispose()


async def test_an_outage_during_the_row_by_row_retry_keeps_the_unwritten_rows(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A batch refused as data is retried row by row; if the database goes away part way, the
    rows not yet written go back to the buffer, not nowhere."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import OperationalError

    from router.writer import BatchWriter

    writes = 0

    async def database_goes_away(_session: AsyncSession, _batch: object) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:  # the whole batch, then row 1, then row 2: the outage
            raise OperationalError("connect", None, OSError("connection refused"))

    writer = BatchWriter(sessions, [Decision], before_write=database_goes_away)
    rows = [
        {
            "id": f"d{i}",
            "task_type": "classify",
            "task_class": "classify",
            "tier": "trivial",
            "model": "gpt-4o-mini",
            "provider": "openai",
            "table_version": 1,
            "sampled": False,
            "input_tokens": 1,
            "has_tool_calls": False,
            "created_at": datetime.now(UTC),
        }
        for i in range(4)
    ]
    rows[0]["tier"] = None  # NOT NULL: the database refuses the batch as data
    for row in rows:
        writer.add(Decision, row)
    with pytest.raises(OperationalError):
        await writer.flush()
    assert writer.depth == 3  # rows 1-3 kept; row 0 was refused and dropped
    assert await writer.flush() == 3
    assert await count(sessions) == 3
