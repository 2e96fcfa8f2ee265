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
    router._sessions = session_factory(engine)  # the database goes away
    with pytest.raises(Exception):  # noqa: B017 - driver-specific connection error
        await router.flush()
    await engine.dispose()
    router._sessions = sessions  # and comes back
    assert await router.flush() == 50
    assert await count(sessions) == 50
