"""Database plumbing shared by both planes: engine construction and the UTC timestamp type.

Engines are built by the composition root (``tierwise.app.create_app``), never at import.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession


def utcnow() -> datetime:
    """Current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC timestamps on every backend (field case D1).

    PostgreSQL stores ``timestamptz``; SQLite stores ISO text without an offset, so values are
    normalised to UTC on the way in and given back their UTC tzinfo on the way out. A naive
    datetime is rejected: it would mean "local time of whichever process wrote it".
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def make_engine(
    url: str, *, statement_cache_size: int | None = None, echo: bool = False
) -> AsyncEngine:
    """Build the async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    ``statement_cache_size=0`` turns off asyncpg's prepared-statement cache, which collides behind
    transaction-mode poolers such as PgBouncer (field case D2; asyncpg and SQLAlchemy asyncpg
    dialect docs). SQLite gets a 30 s busy timeout and foreign keys on.
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    elif statement_cache_size is not None:
        # asyncpg's own cache, and SQLAlchemy's adaptor-level cache of prepared statements.
        kwargs["connect_args"] = {"statement_cache_size": statement_cache_size}
        url = (
            sa.make_url(url)
            .update_query_dict({"prepared_statement_cache_size": str(statement_cache_size)})
            .render_as_string(hide_password=False)
        )
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def dialect_of(session: AsyncSession) -> str:
    """``"sqlite"`` or ``"postgresql"``: the dialect a session talks to."""
    bind = session.bind
    if bind is None:
        raise RuntimeError("session is not bound to an engine")
    return str(bind.dialect.name)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that do not expire on commit, so returned rows stay readable."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
