"""The few statements that differ between SQLite and PostgreSQL, written once.

Every module that needs one of these asks here instead of branching on the dialect itself:

- :func:`insert_ignore`: ``INSERT ... ON CONFLICT DO NOTHING`` (both dialects have it);
  :func:`insert_rows_ignore` the same for an executemany, skipping on PostgreSQL an id already
  stored in another day partition of ``decision``.
- :func:`insert_ignore_many`: the same statement for many rows at once, bound without
  SQLAlchemy's per-row parameter machinery (the batch writer's hot loop).
- :func:`skip_locked`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent workers never
  claim the same row; SQLite takes no row locks (one process owns an embedded database, and
  SQLite serialises writers).
- :func:`try_advisory_lock` / :func:`advisory_lock`: a transaction-level advisory lock on
  PostgreSQL (``pg_try_advisory_xact_lock`` / ``pg_advisory_xact_lock``, released at commit or
  rollback), keyed by a job name; always granted on SQLite.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import dialect_of

T = TypeVar("T", bound=Select[Any])


def insert_ignore(session: AsyncSession, table: Any) -> Any:
    """``INSERT INTO table ... ON CONFLICT DO NOTHING`` for the session's dialect; add
    ``.values(...)`` or pass rows as ``params``."""
    if dialect_of(session) == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


# Tables partitioned on PostgreSQL (revision 0011) whose id alone must stay unique: their
# primary key there includes the partition key, so a repeated id with another timestamp (a
# retried call's decision id, derived from its request id) would not conflict by itself.
UNIQUE_ACROSS_PARTITIONS = {"decision": "id"}


def insert_rows_ignore(
    session: AsyncSession, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> Any:
    """:func:`insert_ignore` for an executemany of ``rows`` (all with the same keys; pass them
    as ``params``). On PostgreSQL, for a table of :data:`UNIQUE_ACROSS_PARTITIONS`, it is
    ``INSERT ... SELECT ... WHERE NOT EXISTS (a row with that id) ON CONFLICT DO NOTHING``, so
    an id already stored in any partition is skipped. (Two transactions inserting one id at
    the same moment with different timestamps can still both insert.)"""
    key = UNIQUE_ACROSS_PARTITIONS.get(table.name)
    if dialect_of(session) != "postgresql" or key is None or not rows:
        return insert_ignore(session, table)
    columns = list(rows[0])
    params = {c: sa.bindparam(c, type_=table.c[c].type) for c in columns}
    values = [sa.cast(params[c], table.c[c].type).label(c) for c in columns]
    stored = (
        sa.select(sa.literal(1))
        .select_from(table)
        .where(table.c[key] == values[columns.index(key)])
    )
    source = sa.select(*values).where(~sa.exists(stored))
    return postgresql.insert(table).from_select(columns, source).on_conflict_do_nothing()


_Plan = tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]
_PLANS: dict[tuple[str, str, tuple[str, ...]], _Plan | None] = {}


def _plan(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> _Plan | None:
    """The compiled ``INSERT ... ON CONFLICT DO NOTHING`` of ``keys`` and, in its parameter
    order, each key with its column type's bind processor for ``dialect``; None when the
    statement needs more than the rows give (a Python-side default of a column they lack),
    which only SQLAlchemy's own path computes. Cached per (dialect, table, keys)."""
    cache_key = (dialect.name, table.name, keys)
    if cache_key in _PLANS:
        return _PLANS[cache_key]
    ins = postgresql.insert(table) if dialect.name == "postgresql" else sqlite.insert(table)
    compiled = ins.on_conflict_do_nothing().compile(dialect=dialect, column_keys=list(keys))
    names = list(compiled.positiontup or ())
    plan: _Plan | None = None
    if sorted(names) == sorted(keys):
        binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        ]
        plan = (compiled.string, binds)
    _PLANS[cache_key] = plan
    return plan


async def insert_ignore_many(
    session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]]
) -> None:
    """``INSERT INTO table ... ON CONFLICT DO NOTHING`` of ``rows`` (column key -> value), as
    one executemany in the session's transaction. What ``session.execute(insert_ignore(...),
    rows)`` stores, at a fraction of its CPU per row: the statement is compiled once per set of
    keys and each value goes through its column type's own bind processor (``UTCDateTime``,
    JSON), instead of SQLAlchemy's general per-row parameter construction, which was most of
    the batch writer's cost (``bench/route.py``). Rows with differing keys, or lacking a
    column that has a Python-side default, take SQLAlchemy's path.

    Raises:
        DBAPIError: as the insert would (IntegrityError / DataError for a refused row).
    """
    if not rows:
        return
    keys = tuple(rows[0])
    bind = session.bind
    plan = None
    if bind is not None and all(len(row) == len(keys) for row in rows):
        plan = _plan(bind.dialect, table, keys)
    if plan is None or any(tuple(row) != keys for row in rows):
        await session.exec(insert_ignore(session, table), params=rows)
        return
    sql, binds = plan
    # Each row's values read in one C call (itemgetter), then only the columns whose type has a
    # bind processor converted: per row, the cost is the processors' own.
    values_of = itemgetter(*(key for key, _ in binds))
    processed = [(i, process) for i, (_, process) in enumerate(binds) if process is not None]
    params: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(values_of(row)) if len(binds) > 1 else [values_of(row)]
        for i, process in processed:
            values[i] = process(values[i])
        params.append(tuple(values))
    conn = await session.connection()
    if bind is not None and bind.dialect.name == "sqlite":
        names = [key for key, _ in binds]
        if all(table.c[key].name == key for key in names):
            await _sqlite_values(conn, table, names, params)
            return
    await conn.exec_driver_sql(sql, params)


def _sqlite_rows_per_statement(columns: int) -> int:
    """Rows one multi-row ``VALUES`` statement takes on this SQLite: at most 500, within its
    host-parameter limit (``SQLITE_LIMIT_VARIABLE_NUMBER``; 999 before SQLite 3.32)."""
    global _SQLITE_VARIABLES
    if _SQLITE_VARIABLES is None:
        probe = sqlite3.connect(":memory:")
        try:
            _SQLITE_VARIABLES = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        finally:
            probe.close()
    return max(1, min(500, _SQLITE_VARIABLES // columns))


_SQLITE_VARIABLES: int | None = None
_VALUES_SQL: dict[tuple[str, tuple[str, ...], int], str] = {}


async def _sqlite_values(
    conn: Any, table: sa.Table, names: list[str], params: list[tuple[Any, ...]]
) -> None:
    """``params`` inserted as multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT DO
    NOTHING`` statements instead of an executemany. sqlite3's executemany binds each row with
    the GIL held and steps it with the GIL released: two GIL hand-offs a row between the
    driver's thread (aiosqlite) and an event loop busy serving requests, which the loop wins
    for up to the 5 ms switch interval each time, so a batch took hundreds of ms under load.
    One statement per up to 500 rows makes that two hand-offs per statement."""
    per = _sqlite_rows_per_statement(len(names))
    for start in range(0, len(params), per):
        chunk = params[start : start + per]
        key = (table.name, tuple(names), len(chunk))
        sql = _VALUES_SQL.get(key)
        if sql is None:
            quote = conn.dialect.identifier_preparer.quote
            group = "(" + ", ".join("?" * len(names)) + ")"
            sql = (
                f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
                f"VALUES {', '.join([group] * len(chunk))} ON CONFLICT DO NOTHING"
            )
            if len(_VALUES_SQL) < 256:  # full chunks repeat; a batch's last chunk varies
                _VALUES_SQL[key] = sql
        await conn.exec_driver_sql(sql, tuple(value for row in chunk for value in row))


def skip_locked(session: AsyncSession, stmt: T) -> T:
    """``stmt`` with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; unchanged on SQLite."""
    if dialect_of(session) == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def lock_key(name: str) -> int:
    """The advisory-lock key of a job name: CRC-32 of ``tierwise:<name>`` (fits PostgreSQL's
    bigint key space; stable across processes and versions)."""
    return zlib.crc32(f"tierwise:{name}".encode())


async def try_advisory_lock(session: AsyncSession, name: str) -> bool:
    """Take ``name``'s transaction-level advisory lock without waiting: True when taken (always
    on SQLite), False when another transaction holds it."""
    if dialect_of(session) != "postgresql":
        return True
    conn = await session.connection()
    got = await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(lock_key(name))))
    return bool(got.scalar_one())


async def advisory_lock(session: AsyncSession, name: str) -> None:
    """Take ``name``'s transaction-level advisory lock, waiting for its holder; no-op on
    SQLite."""
    if dialect_of(session) == "postgresql":
        conn = await session.connection()
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(name))))
