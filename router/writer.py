"""The batch writer: rows accepted on the hot path, written to the database in batches.

A caller appends rows (``dict`` column -> value) for any of the writer's tables without I/O;
a background task writes everything buffered every ``flush_interval_s`` seconds, or as soon as
``flush_size`` rows wait, in one transaction, table by table in the order given (foreign-key
order: a decision before its outcome). Every insert is ``ON CONFLICT DO NOTHING``, so a row
written twice (a retry, or another writer that got there first) is stored once.

Failure rules (one bad row never blocks the rest; nothing buffered is lost to an outage):

- A database that is down, locked or out of connections keeps the batch for the next try; the
  buffer is bounded at ``max_buffered`` rows, past which the oldest are dropped and logged.
- A batch the database refuses as data (``IntegrityError`` / ``DataError``) is written again
  row by row, and only the refused rows are dropped (and logged).
- A cancelled flush (shutdown, a cancelled request) puts its batch back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import dialect_of
from router.dialect import UNIQUE_ACROSS_PARTITIONS, insert_ignore_many, insert_rows_ignore

log = logging.getLogger(__name__)

Row = dict[str, Any]
Batch = list[tuple[type[SQLModel], Row]]
BeforeWrite = Callable[[AsyncSession, Batch], Awaitable[None]]


def _primary_key(table: type[SQLModel]) -> tuple[str, ...]:
    return tuple(c.name for c in table.__table__.primary_key.columns)  # type: ignore[attr-defined]


class BatchWriter:
    """Buffers rows and writes them in batches (see the module doc).

    Args:
        sessions: the session factory.
        tables: the tables this writer may take rows for, in foreign-key order.
        flush_interval_s: how often the background task writes, s.
        flush_size: rows waiting that wake the task at once.
        max_buffered: rows kept while the database cannot take them.
        before_write: awaited inside each batch's transaction before its inserts (a hook for
            rows derived from the batch, such as the class registry).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tables: Sequence[type[SQLModel]],
        *,
        flush_interval_s: float = 0.2,
        flush_size: int = 500,
        max_buffered: int = 200_000,
        before_write: BeforeWrite | None = None,
    ) -> None:
        self._sessions = sessions
        self._order = {table: i for i, table in enumerate(tables)}
        self._flush_interval_s = flush_interval_s
        self._flush_size = flush_size
        self._max_buffered = max_buffered
        self._before_write = before_write
        self._buffer: Batch = []
        # The batch being written: not in the database yet, no longer in the buffer.
        self._inflight: Batch = []
        self._keys = {table: _primary_key(table) for table in tables}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, table: type[SQLModel], row: Row) -> None:
        """Buffer one row for ``table``. No I/O.

        Raises:
            KeyError: ``table`` is not one of the writer's tables.
        """
        if table not in self._order:
            raise KeyError(f"the batch writer does not write {table.__name__}")
        self._buffer.append((table, row))
        if len(self._buffer) > self._max_buffered:  # a flush that hangs must not grow it forever
            log.error("write buffer full: dropping the oldest unwritten row")
            del self._buffer[0]
        if len(self._buffer) >= self._flush_size and not self._lock.locked():
            self._wake.set()

    def pending(self, table: type[SQLModel], keys: set[object]) -> dict[object, Row]:
        """Rows of ``table`` not yet committed (buffered or being written) whose primary key
        (a one-column key) is in ``keys``, by key. One pass over what is waiting."""
        (column,) = self._keys[table]
        found: dict[object, Row] = {}
        for t, row in (*self._inflight, *self._buffer):
            if t is table and row[column] in keys:
                found.setdefault(row[column], row)
        return found

    @property
    def depth(self) -> int:
        """Rows waiting to be written."""
        return len(self._buffer)

    async def flush(self) -> int:
        """Write every buffered row in one transaction; returns how many were written.

        Raises:
            DBAPIError | OSError: the database could not be reached; the batch is kept.
        """
        async with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            self._inflight = batch
            try:
                return await self._write_all(batch)
            finally:
                self._inflight = []

    async def _write_all(self, batch: Batch) -> int:
        """Write ``batch``; a batch refused as data is written row by row, dropping only the
        refused rows; any other failure puts the batch back and raises."""
        try:
            await self._write(batch)
        except (IntegrityError, DataError):
            pass
        except BaseException:
            self._restore(batch)
            raise
        else:
            return len(batch)
        written = 0
        for i, item in enumerate(batch):
            try:
                await self._write([item])
                written += 1
            except (IntegrityError, DataError):
                log.exception("%s row refused by the database; dropped", item[0].__name__)
            except BaseException:
                # The database went away (or the flush was cancelled) part way: keep the rest.
                self._restore(batch[i:])
                raise
        return written

    def _restore(self, batch: Batch) -> None:
        """Put an unwritten batch back in front of the buffer, within its bound."""
        self._buffer[:0] = batch
        excess = len(self._buffer) - self._max_buffered
        if excess > 0:
            log.error("write buffer full: dropping the %d oldest unwritten rows", excess)
            del self._buffer[:excess]

    async def _write(self, batch: Batch) -> None:
        async with self._sessions() as session:
            if self._before_write is not None:
                await self._before_write(session, batch)
            for table in sorted({t for t, _ in batch}, key=self._order.__getitem__):
                # Rows in primary-key order, as every writer of these tables inserts them, so
                # concurrent transactions take their row locks in one order (no deadlock).
                key = self._keys[table]
                rows = sorted(
                    (row for t, row in batch if t is table),
                    key=lambda row: tuple(str(row[c]) for c in key),
                )
                # One executemany of plain rows, bound without SQLAlchemy's per-row parameter
                # machinery (router.dialect.insert_ignore_many): most of a row's CPU was there.
                core = table.__table__  # type: ignore[attr-defined]
                if dialect_of(session) == "postgresql" and core.name in UNIQUE_ACROSS_PARTITIONS:
                    # An id stored in another day partition is skipped (router.dialect).
                    await session.exec(insert_rows_ignore(session, core, rows), params=rows)
                else:
                    await insert_ignore_many(session, core, rows)
            await session.commit()

    async def start(self) -> None:
        """Start the background task."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="batch-writer")

    async def stop(self) -> None:
        """Stop the background task (a write in progress finishes) and write what is buffered.

        Raises:
            DBAPIError | OSError: the final write failed; the rows stay buffered.
        """
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                await self.flush()
            except Exception:
                log.exception("batch write failed; retrying in %.1f s", self._flush_interval_s)
