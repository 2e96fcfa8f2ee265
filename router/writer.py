"""The batch writer: rows accepted on the hot path, written to the database in batches.

A caller appends rows (``dict`` column -> value) for any of the writer's tables without I/O;
a background task writes everything buffered every ``flush_interval_s`` seconds, or as soon as
``flush_size`` rows wait, in one transaction, table by table in the order given (foreign-key
order: a decision before its outcome). Every insert is ``ON CONFLICT DO NOTHING``, so a row
written twice (a retry, or another writer that got there first) is stored once.

Failure rules (one bad row never blocks the rest; nothing buffered is lost to an outage):

- A database that is down, locked or out of connections keeps the batch for the next try; the
  buffer is bounded at ``max_buffered`` rows, past which the oldest are dropped and logged.
- With a :class:`~router.spool.Spool`, a failed write instead moves the batch and everything
  buffered to local disk and the writer *spools*: every row added from then on is appended to
  the spool (fsynced, in groups) and :meth:`BatchWriter.durable` waits for that before the
  caller acknowledges it. The background task retries the database every ``retry_s`` seconds
  by writing the spool's segments back oldest first, in order; once the spool is empty the
  writer writes to the database again. Rows spooled by a process that was killed are found
  at the next start and written first. :meth:`BatchWriter.check_room` refuses a new row
  (:class:`~router.errors.Unavailable`, 503) while spooling with a full spool. The outage is
  reported to :class:`~router.health.DatabaseHealth` (one log line when it starts, one when
  it ends), not logged per retry.
- A batch the database refuses as data (``IntegrityError`` / ``DataError``) is written again
  row by row, and only the refused rows are dropped (and logged).
- A cancelled flush (shutdown, a cancelled request) puts its batch back.

Backpressure: while the database takes rows, more than ``high_water`` rows waiting makes
:meth:`BatchWriter.durable` wait for the next write before the caller acknowledges. A process
serving requests faster than its database takes rows would otherwise grow the buffer without
bound: before SQLite's rows went in as multi-row statements
(:func:`router.dialect.insert_ignore_many`), it grew by thousands of rows a second under
``bench/route.py``'s 32 connections (74,000 after 8 s), each write built parameters for tens of
thousands of rows in one go on the loop, and past ``max_buffered`` the oldest decisions would
have been dropped. Now that load holds 2,000-3,500 rows and never waits; past the mark, the
requests a process answers are the ones it can also record.
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
from router.dialect import (
    UNIQUE_ACROSS_PARTITIONS,
    insert_ignore_many,
    insert_rows_ignore,
)
from router.errors import Unavailable
from router.health import DatabaseHealth, one_line
from router.spool import Spool, SpoolFull

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
        spool: where rows go while the database cannot take them (None: keep them in memory
            only, within ``max_buffered``).
        health: where database failures and recoveries are reported (default: its own).
        retry_s: how often the database is tried again while spooling, s.
        retry_after_s: the ``Retry-After`` of a refusal (:meth:`check_room`, :meth:`durable`).
        high_water: rows waiting past which :meth:`durable` waits for a write (default 20
            times ``flush_size``; see the module doc).
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
        spool: Spool | None = None,
        health: DatabaseHealth | None = None,
        retry_s: float = 1.0,
        retry_after_s: int = 5,
        high_water: int | None = None,
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
        # ---- spooling (see the module doc) ----
        self.spool = spool
        self.health = health or DatabaseHealth()
        self._retry_s = retry_s
        self._retry_after_s = retry_after_s
        self._spooling = spool is not None and not spool.empty
        self._spool_lock = asyncio.Lock()
        self._spool_wake = asyncio.Event()
        self._spooler: asyncio.Task[None] | None = None
        self._added = 0  # rows ever added (a sequence number)
        self._durable = 0  # rows added up to this number are spooled or committed
        self._spool_error: str | None = None
        self._appended = asyncio.Event()  # set (and replaced) after each spool append round
        # ---- backpressure (see the module doc) ----
        self._high_water = 20 * flush_size if high_water is None else high_water
        self._written = asyncio.Event()  # set (and replaced) after each write attempt
        self._writes_ok = True  # the last write attempt succeeded

    @property
    def spooling(self) -> bool:
        """True while rows go to the spool instead of the database."""
        return self._spooling

    def check_room(self) -> None:
        """Refuse a new row now if it could not be kept: spooling, and the spool is full or
        there is none.

        Raises:
            Unavailable: 503 with ``Retry-After``.
        """
        if not self._spooling:
            return
        if self.spool is None or not self.spool.room():
            where = (
                "no spool" if self.spool is None else f"the spool {self.spool.directory} is full"
            )
            raise Unavailable(
                f"the database is unreachable and {where}: this request cannot be kept; "
                "retry later",
                retry_after_s=self._retry_after_s,
            )

    async def durable(self) -> None:
        """Return once every row added so far is safe to acknowledge: at once while the
        database takes rows (they are written within ``flush_interval_s``) unless more than
        ``high_water`` wait (then after the next write: backpressure), after their spool
        append (fsynced) while spooling.

        Raises:
            Unavailable: the spool could not take them (full, or the disk refused): they
                were not acknowledged (503 with ``Retry-After``).
        """
        target = self._added
        while (
            len(self._buffer) > self._high_water
            and self._writes_ok
            and not self._spooling
            and self._task is not None
        ):
            written = self._written
            self._wake.set()
            await written.wait()
        while self._spooling and self._durable < target:
            appended = self._appended
            self._spool_wake.set()
            await appended.wait()
            if self._durable < target and self._spool_error is not None:
                raise Unavailable(
                    f"the database is unreachable and the row could not be spooled: "
                    f"{self._spool_error}; retry later",
                    retry_after_s=self._retry_after_s,
                )

    def add(self, table: type[SQLModel], row: Row) -> None:
        """Buffer one row for ``table``. No I/O.

        Raises:
            KeyError: ``table`` is not one of the writer's tables.
        """
        if table not in self._order:
            raise KeyError(f"the batch writer does not write {table.__name__}")
        self._buffer.append((table, row))
        self._added += 1
        if self._spooling:
            self._spool_wake.set()
        if len(self._buffer) > self._max_buffered:  # a flush that hangs must not grow it forever
            log.error("write buffer full: dropping the oldest unwritten row")
            del self._buffer[0]
        if len(self._buffer) >= self._flush_size and not self._lock.locked() and not self._spooling:
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
        """Rows waiting in memory to be written or spooled."""
        return len(self._buffer)

    @property
    def spooled(self) -> int:
        """Rows in the spool waiting for the database (0 without a spool)."""
        return 0 if self.spool is None else self.spool.rows

    async def flush(self) -> int:
        """Write the spool's rows (while spooling) and then every buffered row; returns how
        many were written.

        Raises:
            DBAPIError | OSError: the database could not be reached; the batch is kept (and
                the spool too).
        """
        async with self._lock:
            written = await self._drain() if self._spooling else 0
            batch, self._buffer = self._buffer, []
            if not batch:
                return written
            self._inflight = batch
            try:
                return written + await self._write_all(batch)
            finally:
                self._inflight = []

    async def _drain(self) -> int:
        """Write the spool's segments back, oldest first, each in batches of ``flush_size``
        rows in order, deleting a segment once it is written; stop spooling once it is empty.
        Returns the rows written.

        Raises:
            DBAPIError | OSError: the database could not take them; the spool keeps what is
                not written yet (what was is stored once when read again).
        """
        spool = self.spool
        assert spool is not None
        written = 0
        while True:
            for path in spool.seal():
                batch = await asyncio.to_thread(spool.read, path)
                for i in range(0, len(batch), self._flush_size):
                    written += await self._write_all(batch[i : i + self._flush_size], _kept)
                await asyncio.to_thread(spool.remove, path)
            async with self._spool_lock:
                if spool.empty:
                    self._spooling = False
                    self._durable = self._added
                    self._signal_appended()
                    return written

    async def _write_all(self, batch: Batch, keep: Callable[[Batch], None] | None = None) -> int:
        """Write ``batch``; a batch refused as data is written row by row, dropping only the
        refused rows; any other failure hands what is unwritten to ``keep`` (default: back in
        front of the buffer) and raises."""
        keep = keep or self._restore
        try:
            await self._write(batch)
        except (IntegrityError, DataError):
            pass
        except BaseException:
            keep(batch)
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
                keep(batch[i:])
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

    # ---- spooling ---------------------------------------------------------------------------
    async def _spool_buffer(self) -> None:
        """Append everything buffered to the spool (the caller holds the spool lock); rows the
        spool refuses stay buffered, and their waiters are told (:meth:`durable`)."""
        assert self.spool is not None
        batch, target = self._buffer, self._added
        self._buffer = []
        try:
            if batch:
                await asyncio.to_thread(self.spool.append, batch)
        except (SpoolFull, OSError, TypeError) as exc:
            self._restore(batch)
            if self._spool_error is None:
                log.error("cannot spool %d rows: %s; refusing what cannot be kept", len(batch), exc)
            self._spool_error = one_line(exc) if not isinstance(exc, SpoolFull) else str(exc)
        else:
            self._durable = target
            self.health.spooled += len(batch)
            self._spool_error = None
        finally:
            self._signal_appended()

    def _signal_appended(self) -> None:
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    async def _spool_loop(self) -> None:
        """Group commit while spooling: every wake appends all rows added since the last one."""
        while True:
            await self._spool_wake.wait()
            self._spool_wake.clear()
            async with self._spool_lock:
                if self._spooling:
                    await self._spool_buffer()
            if self._stopping.is_set():
                return

    async def _failed(self, exc: BaseException) -> None:
        """A write failed: report it, and with a spool start spooling (the failed batch is
        back in front of the buffer, so it is spooled first)."""
        log.debug("batch write failed", exc_info=exc)
        self.health.failed("writes", exc)
        if self.spool is None or self._spooling:
            return
        async with self._spool_lock:
            self._spooling = True
            await self._spool_buffer()

    async def begin_spooling(self) -> bool:
        """Spool from now on, without waiting for a batch write to fail (outcome intake found
        the database unreachable while this writer had nothing to write). Waits for a write in
        progress to end, so the spool still holds the oldest unwritten rows. False without a
        spool."""
        if self.spool is None:
            return False
        async with self._lock:
            if not self._spooling:
                async with self._spool_lock:
                    self._spooling = True
                    await self._spool_buffer()
        return True

    async def start(self) -> None:
        """Start the background task (and, with rows spooled by an earlier run, write those
        first)."""
        self._stopping.clear()
        if self.spool is not None and not self.spool.empty:
            self._spooling = True
            log.warning(
                "%d rows spooled by an earlier run in %s: writing them to the database first",
                self.spool.rows,
                self.spool.directory,
            )
        self._task = asyncio.create_task(self._loop(), name="batch-writer")
        self._spooler = asyncio.create_task(self._spool_loop(), name="spool-writer")

    async def stop(self) -> None:
        """Stop the background task (a write in progress finishes) and write what is buffered;
        while spooling, or when that write fails, spool it instead.

        Raises:
            DBAPIError | OSError: the final write failed and there is no spool (or it refused);
                the rows stay buffered.
        """
        self._stopping.set()
        self._wake.set()
        self._spool_wake.set()
        tasks = [t for t in (self._task, self._spooler) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._spooler = None
        self._written.set()  # a caller held back by backpressure goes on (this stop writes)
        if not self._spooling:
            try:
                await self.flush()
                return
            except Exception as exc:
                if self.spool is None:
                    raise
                self.health.failed("writes", exc)
        async with self._spool_lock:
            self._spooling = True
            await self._spool_buffer()
        if self._buffer:
            raise OSError(f"{len(self._buffer)} rows could not be spooled: {self._spool_error}")

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            wait_s = self._retry_s if self._spooling else self._flush_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                written = await self.flush()
            except Exception as exc:
                self._writes_ok = False
                await self._failed(exc)
            else:
                self._writes_ok = True
                if written:
                    self.health.ok("writes")
            finally:
                done, self._written = self._written, asyncio.Event()
                done.set()


def _kept(_batch: Batch) -> None:
    """Where a spooled batch's unwritten rows go on a failure: nowhere, they are still in the
    spool."""
