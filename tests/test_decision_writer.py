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


def _decision_rows(n: int, prefix: str = "r") -> list[dict[str, object]]:
    from datetime import UTC, datetime

    return [
        {
            "id": f"{prefix}{i:05d}",
            "task_type": "classify",
            "task_class": "classify",
            "tier": "trivial",
            "model": "gpt-4o-mini",
            "provider": "openai",
            "table_version": 1,
            "sampled": i % 2 == 0,
            "input_tokens": i,
            "has_tool_calls": False,
            "meta": {"i": i} if i % 3 == 0 else None,
            "created_at": datetime.now(UTC),
        }
        for i in range(n)
    ]


async def test_a_batch_larger_than_one_statement_is_stored_whole_and_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """On SQLite a batch goes in as multi-row statements of up to 500 rows; 1,234 rows (three
    statements, the last partial), each stored once with its values, a repeat ignored."""
    from router.writer import BatchWriter

    writer = BatchWriter(sessions, [Decision])
    rows = _decision_rows(1234)
    for row in rows:
        writer.add(Decision, row)
    writer.add(Decision, {**rows[7], "input_tokens": 999_999})  # the same id again
    assert await writer.flush() == 1235
    assert await count(sessions) == 1234
    async with sessions() as session:
        stored = {d.id: d for d in (await session.exec(select(Decision))).all()}
    for row in (rows[0], rows[7], rows[500], rows[1233]):
        d = stored[str(row["id"])]
        assert (d.input_tokens, d.sampled, d.meta) == (
            row["input_tokens"],
            row["sampled"],
            row["meta"],
        )
        assert d.created_at == row["created_at"]


async def test_a_refused_row_in_a_large_batch_drops_only_itself(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from router.writer import BatchWriter

    writer = BatchWriter(sessions, [Decision])
    rows = _decision_rows(800)
    rows[612]["tier"] = None  # NOT NULL: refused as data
    for row in rows:
        writer.add(Decision, row)
    assert await writer.flush() == 799
    assert await count(sessions) == 799


async def test_past_the_high_water_mark_acknowledging_waits_for_a_write(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Backpressure: with more than ``high_water`` rows waiting, ``durable()`` returns only
    after the writer has written them; at or under it, at once."""
    import asyncio

    from router.writer import BatchWriter

    # A long interval and a large flush size: only backpressure wakes the writer early.
    writer = BatchWriter(sessions, [Decision], flush_interval_s=30, flush_size=10_000, high_water=5)
    await writer.start()
    try:
        rows = _decision_rows(6)
        for row in rows[:5]:
            writer.add(Decision, row)
        await asyncio.wait_for(writer.durable(), timeout=1)  # 5 waiting: at once
        assert await count(sessions) == 0
        writer.add(Decision, rows[5])
        await asyncio.wait_for(writer.durable(), timeout=5)  # 6 > 5: after the write
        assert await count(sessions) == 6
        assert writer.depth == 0
    finally:
        await writer.stop()


async def test_backpressure_does_not_hold_callers_while_writes_fail(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """With no spool and the database failing, rows are kept in memory as before (within
    ``max_buffered``) and acknowledging does not wait for a write that cannot happen."""
    import asyncio

    from router.writer import BatchWriter

    dead = (
        "sqlite+aiosqlite:////no/such/dir/tierwise.db"
        if database_url.startswith("sqlite")
        else "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    )
    engine = make_engine(dead)
    writer = BatchWriter(
        session_factory(engine), [Decision], flush_interval_s=0.01, flush_size=2, high_water=3
    )
    await writer.start()
    try:
        rows = _decision_rows(10)
        for row in rows[:4]:
            writer.add(Decision, row)
        await asyncio.sleep(0.3)  # the writer has tried and failed
        for row in rows[4:]:
            writer.add(Decision, row)
        await asyncio.wait_for(writer.durable(), timeout=1)  # held, it would time out
    finally:
        writer._sessions = sessions  # the database is back: stop writes what is buffered
        await writer.stop()
        await engine.dispose()
    assert await count(sessions) == 10
