"""The compression stage's link to the database, off the hot path.

The stage never waits on the database: it reads each class's quality-guard level from memory
and adds to in-memory books and a probe buffer. :meth:`CompressionStore.poke` (called by the
stage after every call) starts one background :meth:`~CompressionStore.sync` when the last one
is older than ``sync_s``: it adds the books to ``compression_day`` (``ON CONFLICT DO UPDATE SET
x = x + excluded.x``, so replicas add to the same rows), inserts the probes (``ON CONFLICT DO
NOTHING``) and reads every class's level from ``compression_state``. A failed sync keeps what it
could not write for the next one (logged). :meth:`~CompressionStore.aclose` syncs once more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.compression.models import CompressionDay, CompressionProbe, CompressionState
from router.db import dialect_of
from router.dialect import insert_ignore

log = logging.getLogger(__name__)

BOOK_FIELDS = ("calls", "compressed", "guarded", "tokens_before", "tokens_after", "saved_nusd")
MAX_PROBES_BUFFERED = 10_000
"""Probes held while the database is unreachable; more are dropped (logged)."""


class CompressionStore:
    """Levels read and books/probes written in the background (module doc).

    Args:
        sessions: the database's session factory.
        sync_s: seconds between background syncs (the router's ``snapshot_poll_s``, 1 s).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        sync_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._sync_s = sync_s
        self._clock = clock
        self._levels: dict[str, int] = {}
        self._books: dict[tuple[datetime, str, str], dict[str, int]] = {}
        self._probes: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._last = -float("inf")

    def level(self, task_class: str) -> int:
        """The class's quality-guard level as last read (0 when it has none)."""
        return self._levels.get(task_class, 0)

    def book(self, day: datetime, task_class: str, model: str, **counts: int) -> None:
        """Add ``counts`` (:data:`BOOK_FIELDS`) to the books of (day, class, served model)."""
        row = self._books.setdefault((day, task_class, model), dict.fromkeys(BOOK_FIELDS, 0))
        for name, value in counts.items():
            row[name] += value

    def probe(self, row: dict[str, Any]) -> None:
        """Queue a ``compression_probe`` row (its columns, by name)."""
        if len(self._probes) >= MAX_PROBES_BUFFERED:
            log.warning("compression: probe buffer full; probe %s dropped", row["decision_id"])
            return
        self._probes.append(row)

    def poke(self) -> None:
        """Start a background sync when one is due and none is running."""
        if self._task is not None and not self._task.done():
            return
        if self._clock() - self._last < self._sync_s:
            return
        self._last = self._clock()
        self._task = asyncio.get_running_loop().create_task(self.sync())

    async def sync(self) -> None:
        """Write the books and probes, read the levels (module doc); one sync at a time, so a
        sync that returns has written everything added before it was called. Never raises."""
        async with self._lock:
            await self._sync()

    async def _sync(self) -> None:
        books, self._books = self._books, {}
        probes, self._probes = self._probes, []
        try:
            async with self._sessions() as session:
                if books:
                    await session.exec(_add_books(session), params=_book_rows(books))
                if probes:
                    await session.exec(insert_ignore(session, CompressionProbe), params=probes)
                levels = (
                    await session.exec(select(CompressionState.task_class, CompressionState.level))
                ).all()
                await session.commit()
            self._levels = {task_class: level for task_class, level in levels}
        except Exception:
            log.exception("compression: sync failed; kept for the next one")
            for (day, task_class, model), row in books.items():
                self.book(day, task_class, model, **row)
            self._probes = probes + self._probes

    async def aclose(self) -> None:
        """Wait for a running sync, then sync what is left."""
        if self._task is not None:
            await self._task
        await self.sync()


def _book_rows(books: dict[tuple[datetime, str, str], dict[str, int]]) -> list[dict[str, Any]]:
    return [
        {"day": day, "task_class": task_class, "model": model, **counts}
        for (day, task_class, model), counts in books.items()
    ]


def _add_books(session: AsyncSession) -> Any:
    """``INSERT INTO compression_day … ON CONFLICT (day, task_class, model) DO UPDATE SET
    x = compression_day.x + excluded.x`` for the session's dialect."""
    table = CompressionDay.__table__  # type: ignore[attr-defined]
    dialect = postgresql if dialect_of(session) == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=["day", "task_class", "model"],
        set_={name: table.c[name] + stmt.excluded[name] for name in BOOK_FIELDS},
    )
