"""Aware UTC timestamps on SQLite and Postgres, same rows for "last 24 hours"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.models import Decision

pytestmark = pytest.mark.asyncio


def decision(i: int, at: datetime) -> Decision:
    return Decision(
        id=f"d{i}",
        task_type="classify",
        task_class="classify",
        tier="trivial",
        model="gpt-4o-mini",
        provider="openai",
        table_version=1,
        sampled=False,
        input_tokens=1,
        has_tool_calls=False,
        created_at=at,
    )


async def test_aware_timestamps_round_trip_and_filter(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime.now(UTC)
    plus_two = timezone(timedelta(hours=2))
    async with sessions() as session:
        session.add(decision(1, now - timedelta(hours=1)))
        session.add(decision(2, (now - timedelta(hours=23)).astimezone(plus_two)))
        session.add(decision(3, now - timedelta(hours=25)))
        await session.commit()
    async with sessions() as session:
        rows = (
            await session.exec(
                select(Decision)
                .where(col(Decision.created_at) >= now - timedelta(hours=24))
                .order_by(col(Decision.id))
            )
        ).all()
    assert [r.id for r in rows] == ["d1", "d2"]
    assert all(
        r.created_at.tzinfo is not None and r.created_at.utcoffset() == timedelta(0) for r in rows
    )
    assert rows[1].created_at == now - timedelta(hours=23)


async def test_naive_datetime_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        session.add(decision(4, datetime(2026, 1, 1)))
        with pytest.raises(Exception, match="naive datetime"):
            await session.commit()
