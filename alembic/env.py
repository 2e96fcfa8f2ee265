"""Alembic environment: one migration history for SQLite and PostgreSQL, over the async engine.

Every online run does, inside the migration's transaction, before the first step: drop the
``_alembic_tmp_<table>`` copies an earlier failed batch migration left behind (logged; refused
when ``<table>`` itself is gone, since the copy may then hold its only rows).

On SQLite the run is shaped by how SQLite changes a table (the "making other kinds of table
schema changes" procedure of https://www.sqlite.org/lang_altertable.html): a batch migration
recreates the table (new table, copy the rows, drop the old one, rename), and with foreign keys
on, dropping a table other rows reference fails. So the migration connection turns foreign keys
off (``PRAGMA foreign_keys`` is a no-op inside a transaction, so before it begins), runs every
step in one ``BEGIN IMMEDIATE`` transaction (the driver would otherwise commit DDL as it goes and
a failure would leave half a migration), runs ``PRAGMA foreign_key_check`` before committing when
a step was applied, rolls everything back and raises :class:`tierwise.migrate.MigrationError` if
that reports a row, and turns foreign keys back on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import evaluator.models  # noqa: F401  (registers the control plane's tables)
import router.models  # noqa: F401  (registers the data plane's tables)
from router.db import make_engine
from tierwise.migrate import BATCH_TMP_PREFIX, MigrationError

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata
log = logging.getLogger("tierwise.migrate")


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from tierwise.settings import Settings

    return Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, render_as_batch=True, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def _drop_leftover_batch_tables(connection: Connection) -> None:
    """Drop each ``_alembic_tmp_<table>`` (a failed batch migration's half-made copy of
    ``<table>``), which would make the retry's ``CREATE TABLE`` fail, logging a warning per table.

    Raises:
        MigrationError: ``<table>`` does not exist, so the copy may hold its only rows; it is
            kept for the operator to look at.
    """
    tables = set(sa.inspect(connection).get_table_names())
    for leftover in sorted(t for t in tables if t.startswith(BATCH_TMP_PREFIX)):
        original = leftover.removeprefix(BATCH_TMP_PREFIX)
        if original not in tables:
            raise MigrationError(
                f"{leftover} is left from a failed batch migration of {original}, but "
                f"{original} does not exist, so it may hold {original}'s only rows: "
                f"restore {original} from it (or drop it) and migrate again"
            )
        log.warning(
            "dropping %s, left from a failed batch migration of %s (%s is intact)",
            leftover,
            original,
            original,
        )
        connection.execute(sa.text(f'DROP TABLE "{leftover}"'))


def _check_foreign_keys(connection: Connection) -> None:
    """SQLite only: every foreign key holds after the steps ran with enforcement off.

    Raises:
        MigrationError: ``PRAGMA foreign_key_check`` reported rows, each named as
            ``<table> rowid <n> -> <parent>`` (the caller rolls the migration back).
    """
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        shown = ", ".join(
            f"{table} rowid {rowid} -> {parent}" for table, rowid, parent, _ in broken
        )
        raise MigrationError(f"migration rolled back: rows break a foreign key: {shown}")


def _sqlite_foreign_keys(connection: Connection, on: bool) -> bool:
    """Set ``PRAGMA foreign_keys`` on the driver connection, outside any transaction (where it
    takes effect); the setting SQLite then reports."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
        cursor.execute("PRAGMA foreign_keys")
        (now,) = cursor.fetchone()
    finally:
        cursor.close()
    return bool(now)


@contextmanager
def _sqlite_migration(connection: Connection) -> Iterator[None]:
    """Foreign keys off, one real transaction around the body, foreign keys back on.

    Raises:
        MigrationError: SQLite would not turn foreign keys off (before anything ran).
    """
    driver = connection.connection.dbapi_connection
    assert driver is not None
    legacy_mode = driver.isolation_level
    # The driver's own transaction handling would not BEGIN before DDL (so a failed step would
    # leave the statements before it committed); this connection begins and ends its own.
    driver.isolation_level = None
    try:
        if _sqlite_foreign_keys(connection, on=False):
            raise MigrationError("SQLite kept foreign keys on; nothing was migrated")
        try:
            # Alembic sees an outer transaction and leaves committing to it.
            with connection.begin():
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield
        finally:
            _sqlite_foreign_keys(connection, on=True)
    finally:
        driver.isolation_level = legacy_mode


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    applied: list[str] = []

    def count_step(*, step: Any, **_kw: Any) -> None:
        applied.append(str(step))

    def migrate() -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            on_version_apply=count_step,
        )
        with context.begin_transaction():
            _drop_leftover_batch_tables(connection)
            context.run_migrations()
            if sqlite and applied:
                _check_foreign_keys(connection)

    if sqlite:
        with _sqlite_migration(connection):
            migrate()
    else:
        migrate()


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run on a fresh event loop; in a worker thread when the caller already runs one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_run_async())
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _run_async()).result()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
