"""Run the Alembic migrations programmatically (synchronously: call it outside an event loop),
and check that a database is at the newest revision (:func:`require_head`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)

from router.db import make_engine
from router.errors import InvalidInput, TierwiseError

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent


def script_location() -> Path:
    """The folder of the migration scripts (``env.py``, ``script.py.mako``, ``versions/``).

    An installed wheel has them inside the package, at ``tierwise/_migrations``: pyproject maps
    the repository's ``alembic/`` folder to that data-only package. A source checkout, and so an
    editable install, has no such folder (setuptools' editable finder cannot import a mapped
    folder without ``__init__.py``) and uses ``alembic/`` beside ``alembic.ini``, where
    migrations are written. Either way the result does not depend on the working directory.

    Raises:
        RuntimeError: neither folder is there (an install without its migrations).
    """
    shipped = PACKAGE / "_migrations"
    if (shipped / "env.py").is_file():
        return shipped
    source = ROOT / "alembic"
    if (ROOT / "alembic.ini").is_file() and (source / "env.py").is_file():
        return source
    raise RuntimeError(f"tierwise's migration scripts are missing: neither {shipped} nor {source}")


# Alembic's batch mode on SQLite builds the altered table as ``_alembic_tmp_<table>``, copies the
# rows, drops ``<table>`` and renames the copy.
BATCH_TMP_PREFIX = "_alembic_tmp_"


class MigrationError(TierwiseError):
    """A migration that was refused or rolled back (the database is left as it was before the
    run): it would break foreign keys, or an earlier failed run left something to look at."""

    code = "migration_failed"


def alembic_config(database_url: str) -> Config:
    """Alembic config for ``database_url`` over :func:`script_location`. No ini file is read, so
    a checkout and a wheel migrate alike (``alembic.ini`` is for the ``alembic`` command line).

    Raises:
        RuntimeError: the migration scripts are missing (:func:`script_location`).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    return cfg


def _check_sqlite_path(database_url: str) -> None:
    """Refuse a SQLite file whose folder does not exist before any driver thread starts (a
    failed aiosqlite connect leaves a worker thread that reports to a closed loop)."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database).expanduser()
        if path.is_dir():
            raise InvalidInput(
                f"cannot use database {database_url}: {path} is a folder: name a file in it, "
                f"e.g. sqlite+aiosqlite:///{path / 'tierwise.db'}",
                field="database_url",
            )
        folder = path.parent
        if not folder.is_dir():
            raise InvalidInput(
                f"cannot use database {database_url}: folder {folder} does not exist",
                field="database_url",
            )


@contextmanager
def _database_errors(database_url: str) -> Iterator[None]:
    """Turn "cannot reach or open the database" into InvalidInput naming ``database_url``, and a
    step that breaks a constraint (its run rolled back) into MigrationError."""
    _check_sqlite_path(database_url)
    try:
        yield
    except IntegrityError as exc:
        raise MigrationError(f"migration rolled back: {str(exc.orig).splitlines()[0]}") from exc
    except (
        ArgumentError,
        NoSuchModuleError,
        DBAPIError,
        OSError,
        ImportError,
        asyncpg.PostgresError,
    ) as exc:
        shown = make_url_safe(database_url)
        raise InvalidInput(
            f"cannot use database {shown}: {_what_to_change(exc)}", field="database_url"
        ) from exc


def _what_to_change(exc: BaseException) -> str:
    """The driver's complaint in one line, with what to change for the usual ones."""
    inner = getattr(exc, "orig", None) or exc
    text = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    fix = "fix TIERWISE_DATABASE_URL (or --database-url)"
    if "does not exist" in text and "database" in text:
        return f"{text}: create it (createdb NAME) or {fix}"
    if isinstance(inner, (ConnectionRefusedError, TimeoutError, OSError)) or "connect" in text:
        return f"{text}: is the database server running there? else {fix}"
    if isinstance(inner, ImportError):
        return f"{text}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
    return f"{text}: {fix}"


def make_url_safe(database_url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def upgrade(database_url: str, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on ``database_url``.

    Raises:
        InvalidInput: the URL is malformed, names an unknown driver, or the database cannot be
            opened or reached (field ``database_url``).
        MigrationError: nothing of the run is kept: a step broke a constraint (a foreign key
            on SQLite is checked once the steps ran, PostgreSQL refuses the statement), or a
            ``_alembic_tmp_<table>`` is left from a failed run while ``<table>`` is gone.
    """
    with _database_errors(database_url):
        command.upgrade(alembic_config(database_url), revision)


def reset(database_url: str) -> None:
    """Drop every tierwise table (``downgrade base``) and build them again (``upgrade head``).

    Raises:
        InvalidInput, MigrationError: as :func:`upgrade`.
    """
    cfg = alembic_config(database_url)
    with _database_errors(database_url):
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")


def head_revision() -> str | None:
    """The newest revision of the migration history (``alembic heads``), or None for none."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def require_head(database_url: str) -> None:
    """Refuse, with one line saying what to run, a database whose schema is not at the newest
    revision (never migrated, or migrated by an older tierwise), for commands that read it
    without migrating it first.

    Raises:
        InvalidInput: the database cannot be reached, or its schema is not at head (field
            ``database_url``).
    """
    with _database_errors(database_url):
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                try:
                    result = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                    current = result.scalar()
                except (OperationalError, ProgrammingError):
                    current = None
        finally:
            await engine.dispose()
    head = head_revision()
    if current != head:
        where = "has no tierwise schema" if current is None else f"is at revision {current}"
        raise InvalidInput(
            f"database {make_url_safe(database_url)} {where}, not {head}: run "
            "`tierwise db upgrade` first",
            field="database_url",
        )
