"""Database plumbing shared by both planes: engine construction, the UTC timestamp type and the
JSON column types.

Engines are built by the composition root (``tierwise.planes.running_planes``), never at import.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn, SupportsIndex

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.mutable import Mutable, MutableDict, MutableList
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


def utcnow() -> datetime:
    """Current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC timestamps on every backend (docs/field-cases.md).

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


NESTED_JSON_READ_ONLY = (
    "a JSON value nested inside a column's value is read-only, because changing it in place "
    "would not be saved: build a new value and assign it at the top level, e.g. "
    "row.meta['key'] = {**row.meta['key'], 'field': 1}"
)


def _read_only(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise TypeError(NESTED_JSON_READ_ONLY)


class ReadOnlyJSONObject(dict[str, Any]):
    """A JSON object nested inside a :data:`JSONDict` / :data:`JSONList` column's value.

    Reading works as for a dict; any change raises TypeError (:data:`NESTED_JSON_READ_ONLY`),
    since the column would not see it and it would be lost. ``copy.deepcopy(x)`` is a plain
    dict, changeable at every depth (``dict(x)`` and ``copy.copy(x)`` only at the top).
    """

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return (dict, (dict(self),))


class ReadOnlyJSONArray(list[Any]):
    """A JSON array nested inside a :data:`JSONDict` / :data:`JSONList` column's value: as
    :class:`ReadOnlyJSONObject`, for lists (``copy.deepcopy(x)`` is a plain list)."""

    __setitem__ = __delitem__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only
    __iadd__ = __imul__ = _read_only

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return (list, (list(self),))


def _read_only_copy(value: Any) -> Any:
    """``value`` with every dict and list in it (at any depth) made read-only."""
    if isinstance(value, dict):
        return ReadOnlyJSONObject({k: _read_only_copy(v) for k, v in value.items()})
    if isinstance(value, list):
        return ReadOnlyJSONArray(_read_only_copy(v) for v in value)
    return value


class TrackedJSONDict(MutableDict[str, Any]):
    """The value of a :data:`JSONDict` column: a dict whose own changes are saved on commit.

    Setting, deleting, ``update``, ``|=``, ``pop``, ``setdefault``, ``clear`` mark the row
    changed. Dicts and lists inside are :class:`ReadOnlyJSONObject` / :class:`ReadOnlyJSONArray`
    (the change tracking sees only this level, so a change deeper down would be lost); what is
    put in is copied read-only the same way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__({k: _read_only_copy(v) for k, v in dict(*args, **kwargs).items()})

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _read_only_copy(value))

    def setdefault(self, key: str, value: Any = None) -> Any:
        if key not in self:
            self[key] = value
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update({k: _read_only_copy(v) for k, v in dict(*args, **kwargs).items()})


class TrackedJSONList(MutableList[Any]):
    """The value of a :data:`JSONList` column: a list whose own changes are saved on commit.

    Item and slice assignment, ``del``, ``append``, ``extend``, ``+=``, ``*=``, ``insert``,
    ``pop``, ``remove``, ``clear``, ``sort``, ``reverse`` mark the row changed. Items that are
    dicts or lists are read-only, as in :class:`TrackedJSONDict`.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(_read_only_copy(v) for v in items)

    def __setitem__(self, index: SupportsIndex | slice, value: Any) -> None:
        if isinstance(index, slice):
            super().__setitem__(index, [_read_only_copy(v) for v in value])
        else:
            super().__setitem__(index, _read_only_copy(value))

    def append(self, x: Any) -> None:
        super().append(_read_only_copy(x))

    def extend(self, x: Iterable[Any]) -> None:
        super().extend(_read_only_copy(v) for v in x)

    def insert(self, i: SupportsIndex, x: Any) -> None:
        super().insert(i, _read_only_copy(x))


# JSON columns (a JSON object / a JSON array; SQL type JSON on both backends) whose in-place
# changes are saved: ``row.meta["k"] = 1; await session.commit()`` writes the row. Only the top
# level is tracked, so nested values are read-only (see TrackedJSONDict). Use these for every
# JSON column, in a model based on JSONTrackingModel: one instance each, since SQLAlchemy finds
# the columns to track by this identity.
JSONDict: sa.types.TypeEngine[dict[str, Any]] = TrackedJSONDict.as_mutable(sa.JSON)
JSONList: sa.types.TypeEngine[list[Any]] = TrackedJSONList.as_mutable(sa.JSON)


@functools.cache
def _tracked_json_columns(model: type[SQLModel]) -> dict[str, type[Mutable]]:
    """Attribute -> the tracked type of its value, for ``model``'s JSONDict/JSONList columns."""
    mapper = sa.inspect(model, raiseerr=False)
    if mapper is None:
        return {}
    found: dict[str, type[Mutable]] = {}
    for prop in mapper.column_attrs:
        kind = prop.columns[0].type
        if kind is JSONDict:
            found[prop.key] = TrackedJSONDict
        elif kind is JSONList:
            found[prop.key] = TrackedJSONList
    return found


class JSONTrackingModel(SQLModel):
    """Base of table models with :data:`JSONDict` / :data:`JSONList` columns.

    A value assigned to such a column (in the constructor too) is stored as its tracked copy
    (:class:`TrackedJSONDict` / :class:`TrackedJSONList`). SQLModel's own assignment would
    store the plain value given, after SQLAlchemy has made the copy, so in-place changes to a row
    built or assigned in Python (not loaded) would be lost.

    Raises:
        ValueError: on assigning a column something other than a dict (list) or None.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        tracked = _tracked_json_columns(type(self)).get(name)
        if tracked is not None:
            value = tracked.coerce(name, value)
        super().__setattr__(name, value)


def make_engine(
    url: str,
    *,
    statement_cache_size: int | None = None,
    echo: bool = False,
    connect_timeout_s: float | None = None,
) -> AsyncEngine:
    """Build the async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    ``statement_cache_size=0`` turns off asyncpg's prepared-statement cache, which collides behind
    transaction-mode poolers such as PgBouncer (asyncpg and SQLAlchemy asyncpg
    dialect docs). ``connect_timeout_s`` bounds one PostgreSQL connection attempt (asyncpg's
    ``timeout``, default 60 s), so an unreachable host fails in seconds. SQLite gets a 30 s
    busy timeout and foreign keys on.
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        connect_args: dict[str, Any] = {}
        if connect_timeout_s is not None:
            connect_args["timeout"] = connect_timeout_s
        if statement_cache_size is not None:
            # asyncpg's own cache, and SQLAlchemy's adaptor-level cache of prepared statements.
            connect_args["statement_cache_size"] = statement_cache_size
        if connect_args:
            kwargs["connect_args"] = connect_args
    if not url.startswith("sqlite") and statement_cache_size is not None:
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
