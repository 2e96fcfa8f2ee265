"""A scratch PostgreSQL database for a benchmark: made on the server of an admin URL, dropped
(``WITH (FORCE)``) when the block ends, whatever happened in it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Yield the SQLAlchemy URL (``postgresql+asyncpg://``) of a new, empty database named
    ``{prefix}_{pid}_{random}`` on ``admin_url``'s server (a ``postgresql://`` URL of a role
    that may create databases); the database is dropped afterwards.

    Raises:
        asyncpg.PostgresError | OSError: the server refused or cannot be reached.
    """
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
