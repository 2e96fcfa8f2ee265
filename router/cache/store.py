"""Where cache entries are kept and searched.

- :class:`PgVectorStore` (PostgreSQL): entries in ``cache_entry``, the embedding a pgvector
  ``vector``; the nearest neighbours of a query within its scope by cosine distance (``<=>``)
  through the partial HNSW index of the embedder's dimension (``hnsw.iterative_scan`` on, so
  a scope filter does not starve the index scan). One round trip per lookup.
- :class:`MemoryStore` (SQLite, the embedded default): entries in the same table, vectors as
  float32 bytes; the search is exact, in memory, over at most ``max_entries`` entries (the
  newest; the oldest are evicted from memory first, and stay in the database until they
  expire). Loaded from the database at start; :meth:`MemoryStore.sync` (called by the stage
  with its once-a-second refresh of the guard's state) drops the entries it holds that have
  expired and applies the quality guard's per-entry changes written since (below).

Both answer :meth:`exact` (the whole request's hash) and :meth:`nearest` (the ``k`` most
similar entries of a scope, best first). Only unexpired entries are ever returned; each
candidate carries its entry's ``min_similarity``, the bar the stage holds a semantic match to
beside the class's threshold.

**Per-entry bars across processes.** The guard (:mod:`evaluator.cache_guard`, a job that may
run in another process) raises an entry's bar or deletes the entry in the database and, in
the same transaction, writes a ``cache_guard_event`` with action :data:`ENTRY_RAISE` (new bar in
``to_threshold``) or :data:`ENTRY_FORGET`, the entry's id in ``evidence[0]["entry_id"]``. The
pgvector store reads ``min_similarity`` with every search, so a change counts at once. The
in-memory store reads the events past the last id it has seen (one primary-key range read,
empty almost always) when it syncs, so a change counts within the stage's refresh interval
(:data:`router.cache.stage.STATE_REFRESH_S`) without any read on the lookup itself. On SQLite
one transaction writes at a time, so event ids commit in order and none is skipped. A bar only
ever goes up (:meth:`raise_bar` never lowers one).
"""

from __future__ import annotations

import heapq
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.cache.models import CacheEntry, CacheGuardEvent, vector_text

DEFAULT_MAX_ENTRIES = 50_000
"""Entries the in-memory search (SQLite) holds: 50,000 x 256 float32 = 51 MB; an exact search
over all of them takes a few ms (``bench/cache.py`` measures it at 10,000)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An entry a lookup found: its ``similarity`` to the query (cosine; 1.0 for an exact
    match) and what a hit serves."""

    entry_id: str
    similarity: float
    min_similarity: float | None
    response: dict[str, Any]
    usage: dict[str, Any] | None
    model: str


ENTRY_RAISE = "entry-raise"
"""``cache_guard_event.action`` of an entry whose bar the guard raised (``to_threshold``)."""

ENTRY_FORGET = "entry-forget"
"""``cache_guard_event.action`` of an entry the guard deleted."""

ENTRY_ACTIONS = (ENTRY_RAISE, ENTRY_FORGET)


def event_entry(evidence: Sequence[dict[str, Any]] | None) -> str | None:
    """The entry id a per-entry ``cache_guard_event`` is about (its first evidence item's
    ``entry_id``); None when there is none."""
    if not evidence:
        return None
    entry_id = evidence[0].get("entry_id")
    return str(entry_id) if entry_id is not None else None


def new_entry_id() -> str:
    """A fresh entry id (32 hex digits)."""
    return uuid.uuid4().hex


class CacheStore(Protocol):
    async def exact(self, key_hash: str, now: datetime) -> Candidate | None:
        """The unexpired entry with this exact key, if any."""
        ...

    async def nearest(
        self, scope: str, dim: int, vector: np.ndarray[Any, Any], now: datetime, k: int = 4
    ) -> list[Candidate]:
        """Up to ``k`` unexpired entries of ``scope`` (of dimension ``dim``), most similar
        first."""
        ...

    async def put(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store entries (``cache_entry`` rows, ``embedding`` a unit vector); an id already
        stored is kept as it was."""
        ...

    async def forget(self, entry_id: str) -> None:
        """Drop one entry (from the search; the database row too)."""
        ...

    async def raise_bar(self, entry_id: str, min_similarity: float) -> None:
        """Raise an entry's own similarity bar to ``min_similarity`` (cosine; after it produced
        a false hit); a bar already at or above it is kept."""
        ...


async def _insert(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    table = CacheEntry.__table__  # type: ignore[attr-defined]
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).on_conflict_do_nothing(index_elements=["id"])
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=["id"])
    conn = await session.connection()
    await conn.execute(stmt, [dict(r) for r in rows])


def _candidate(row: Any, similarity: float) -> Candidate:
    return Candidate(
        row.id, float(similarity), row.min_similarity, row.response, row.usage, row.model
    )


class PgVectorStore:
    """pgvector on PostgreSQL (see the module doc). ``ef_search`` is HNSW's candidate list
    size (pgvector's default 40)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ef_search: int = 40) -> None:
        self._sessions = sessions
        self._ef_search = int(ef_search)

    async def exact(self, key_hash: str, now: datetime) -> Candidate | None:
        async with self._sessions() as session:
            row = (
                await session.exec(
                    select(CacheEntry)
                    .where(col(CacheEntry.key_hash) == key_hash, col(CacheEntry.expires_at) > now)
                    .limit(1)
                )
            ).first()
            return None if row is None else _candidate(row, 1.0)

    async def nearest(
        self, scope: str, dim: int, vector: np.ndarray[Any, Any], now: datetime, k: int = 4
    ) -> list[Candidate]:
        dim = int(dim)
        sql = sa.text(
            f"SELECT id, min_similarity, response, usage, model, "
            f"1 - (embedding::vector({dim}) <=> CAST(:q AS vector({dim}))) AS similarity "
            f"FROM cache_entry WHERE scope = :scope AND dim = {dim} AND expires_at > :now "
            f"ORDER BY embedding::vector({dim}) <=> CAST(:q AS vector({dim})) LIMIT :k"
        ).columns(
            sa.column("id"),
            sa.column("min_similarity"),
            sa.column("response", sa.JSON),
            sa.column("usage", sa.JSON),
            sa.column("model"),
            sa.column("similarity"),
        )
        async with self._sessions() as session, session.begin():
            conn = await session.connection()
            await conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {self._ef_search}"))
            await conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            result = await conn.execute(
                sql, {"q": vector_text(vector), "scope": scope, "now": now, "k": int(k)}
            )
            rows = result.all()
        found = [_candidate(r, r.similarity) for r in rows]
        return sorted(found, key=lambda c: -c.similarity)

    async def put(self, rows: Sequence[dict[str, Any]]) -> None:
        async with self._sessions() as session:
            await _insert(session, rows)
            await session.commit()

    async def forget(self, entry_id: str) -> None:
        async with self._sessions() as session:
            conn = await session.connection()
            await conn.execute(sa.delete(CacheEntry).where(col(CacheEntry.id) == entry_id))
            await session.commit()

    async def raise_bar(self, entry_id: str, min_similarity: float) -> None:
        await _raise_bar(self._sessions, entry_id, min_similarity)


async def _raise_bar(
    sessions: async_sessionmaker[AsyncSession], entry_id: str, min_similarity: float
) -> None:
    async with sessions() as session:
        conn = await session.connection()
        await conn.execute(raise_bar_statement(entry_id, min_similarity))
        await session.commit()


def raise_bar_statement(entry_id: str, min_similarity: float) -> sa.Update:
    """The UPDATE that raises ``entry_id``'s bar to ``min_similarity`` only where it is lower
    (or unset): its rowcount is 1 when the bar changed, 0 when it was already there (or the
    entry is gone)."""
    return (
        sa.update(CacheEntry)
        .where(
            col(CacheEntry.id) == entry_id,
            sa.or_(
                col(CacheEntry.min_similarity).is_(None),
                col(CacheEntry.min_similarity) < min_similarity,
            ),
        )
        .values(min_similarity=min_similarity)
    )


@dataclass
class _Held:
    scope: str
    key_hash: str
    dim: int
    expires_at: datetime
    candidate: Candidate
    row: int


class _Scope:
    """One scope's vectors: a matrix grown by doubling, a removed row zeroed and its id None
    (compacted once half the rows are gone)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.ids: list[str | None] = []
        self.matrix = np.zeros((8, dim), dtype=np.float32)
        self.live = 0

    def add(self, entry_id: str, vector: np.ndarray[Any, Any]) -> int:
        if len(self.ids) == self.matrix.shape[0]:
            grown = np.zeros((self.matrix.shape[0] * 2, self.dim), dtype=np.float32)
            grown[: len(self.ids)] = self.matrix[: len(self.ids)]
            self.matrix = grown
        self.matrix[len(self.ids)] = vector
        self.ids.append(entry_id)
        self.live += 1
        return len(self.ids) - 1

    def remove(self, row: int) -> None:
        self.ids[row] = None
        self.matrix[row] = 0.0
        self.live -= 1


class MemoryStore:
    """Entries in the database, searched exactly in memory (SQLite; see the module doc)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._sessions = sessions
        self.max_entries = max_entries
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._by_key: dict[str, str] = {}
        self._scopes: dict[str, _Scope] = {}
        # (expires_at, entry id), a min-heap: stale items (entries already dropped) are
        # skipped when popped and cleared out when they outnumber the held entries.
        self._expiry: list[tuple[datetime, str]] = []
        self._seen_event = 0

    async def load(self, now: datetime) -> int:
        """Read the newest ``max_entries`` unexpired entries; returns how many. The guard's
        per-entry changes up to now are in the rows; :meth:`sync` applies the later ones."""
        async with self._sessions() as session:
            seen = (await session.exec(select(sa.func.max(CacheGuardEvent.id)))).one()
            self._seen_event = max(self._seen_event, int(seen or 0))
            rows = (
                await session.exec(
                    select(CacheEntry)
                    .where(col(CacheEntry.expires_at) > now)
                    .order_by(col(CacheEntry.created_at).desc())
                    .limit(self.max_entries)
                )
            ).all()
        for row in reversed(rows):
            self._hold(row.model_dump())
        return len(rows)

    def __len__(self) -> int:
        return len(self._held)

    def _hold(self, row: dict[str, Any]) -> None:
        entry_id = str(row["id"])
        if entry_id in self._held:
            return
        vector = np.asarray(row["embedding"], dtype=np.float32)
        dim = int(row["dim"])
        scope = self._scopes.get(row["scope"])
        if scope is None or scope.dim != dim:
            scope = self._scopes[row["scope"]] = _Scope(dim)
        candidate = Candidate(
            entry_id,
            1.0,
            row.get("min_similarity"),
            row["response"],
            row.get("usage"),
            row["model"],
        )
        at = scope.add(entry_id, vector)
        held = _Held(row["scope"], row["key_hash"], dim, row["expires_at"], candidate, at)
        self._held[entry_id] = held
        self._by_key[held.key_hash] = entry_id
        heapq.heappush(self._expiry, (held.expires_at, entry_id))
        if len(self._expiry) > 2 * len(self._held) + 64:
            self._expiry = [(h.expires_at, i) for i, h in self._held.items()]
            heapq.heapify(self._expiry)
        while len(self._held) > self.max_entries:
            self._drop(next(iter(self._held)))

    def _drop(self, entry_id: str) -> None:
        held = self._held.pop(entry_id, None)
        if held is None:
            return
        if self._by_key.get(held.key_hash) == entry_id:
            del self._by_key[held.key_hash]
        scope = self._scopes[held.scope]
        scope.remove(held.row)
        if scope.live == 0:
            del self._scopes[held.scope]
        elif scope.live * 2 < len(scope.ids):
            self._compact(held.scope, scope)

    def _compact(self, name: str, scope: _Scope) -> None:
        fresh = _Scope(scope.dim)
        for row, entry_id in enumerate(scope.ids):
            if entry_id is not None:
                self._held[entry_id].row = fresh.add(entry_id, scope.matrix[row])
        self._scopes[name] = fresh

    async def exact(self, key_hash: str, now: datetime) -> Candidate | None:
        entry_id = self._by_key.get(key_hash)
        held = self._held.get(entry_id) if entry_id is not None else None
        if held is None or held.expires_at <= now:
            return None
        return held.candidate

    async def nearest(
        self, scope: str, dim: int, vector: np.ndarray[Any, Any], now: datetime, k: int = 4
    ) -> list[Candidate]:
        held_scope = self._scopes.get(scope)
        if held_scope is None or held_scope.dim != dim:
            return []
        size = len(held_scope.ids)
        scores = held_scope.matrix[:size] @ np.asarray(vector, dtype=np.float32)
        take = min(size, k * 4)
        top = np.argpartition(-scores, take - 1)[:take] if take < size else np.arange(size)
        found: list[Candidate] = []
        for i in top[np.argsort(-scores[top])]:
            entry_id = held_scope.ids[int(i)]
            if entry_id is None:
                continue
            held = self._held[entry_id]
            if held.expires_at <= now:
                continue
            c = held.candidate
            found.append(
                Candidate(
                    c.entry_id, float(scores[i]), c.min_similarity, c.response, c.usage, c.model
                )
            )
            if len(found) == k:
                break
        return found

    async def put(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self._hold(row)
        async with self._sessions() as session:
            await _insert(session, rows)
            await session.commit()

    async def forget(self, entry_id: str) -> None:
        self._drop(entry_id)
        async with self._sessions() as session:
            conn = await session.connection()
            await conn.execute(sa.delete(CacheEntry).where(col(CacheEntry.id) == entry_id))
            await session.commit()

    def _set_bar(self, entry_id: str, min_similarity: float) -> None:
        held = self._held.get(entry_id)
        if held is None:
            return
        c = held.candidate
        if c.min_similarity is not None and c.min_similarity >= min_similarity:
            return
        held.candidate = Candidate(
            c.entry_id, c.similarity, min_similarity, c.response, c.usage, c.model
        )

    async def raise_bar(self, entry_id: str, min_similarity: float) -> None:
        self._set_bar(entry_id, min_similarity)
        await _raise_bar(self._sessions, entry_id, min_similarity)

    def drop_expired(self, now: datetime) -> int:
        """Drop the held entries expired at ``now`` (they were already never served; this
        frees their memory); returns how many. O(expired x log held)."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, entry_id = heapq.heappop(self._expiry)
            held = self._held.get(entry_id)
            if held is not None and held.expires_at <= now:
                self._drop(entry_id)
                dropped += 1
        return dropped

    async def sync(self, now: datetime) -> int:
        """Drop the entries expired at ``now`` and apply the guard's per-entry changes
        committed since the last sync (or :meth:`load`): the ``cache_guard_event`` rows of
        :data:`ENTRY_ACTIONS` with an id above the last one seen, in id order (a raised bar
        replaces the held candidate's ``min_similarity``, a forgotten entry is dropped).
        Returns the changes read. One indexed read; nothing else touches the database.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database could not be read (the entries held
            stay as they were; the next sync reads the same events).
        """
        self.drop_expired(now)
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(
                        CacheGuardEvent.id,
                        CacheGuardEvent.action,
                        CacheGuardEvent.to_threshold,
                        CacheGuardEvent.evidence,
                    )
                    .where(
                        col(CacheGuardEvent.id) > self._seen_event,
                        col(CacheGuardEvent.action).in_(ENTRY_ACTIONS),
                    )
                    .order_by(col(CacheGuardEvent.id))
                )
            ).all()
        for event_id, action, to_threshold, evidence in rows:
            self._seen_event = max(self._seen_event, int(event_id or 0))
            entry_id = event_entry(evidence)
            if entry_id is None:
                continue
            if action == ENTRY_FORGET or to_threshold is None:
                self._drop(entry_id)
            else:
                self._set_bar(entry_id, float(to_threshold))
        return len(rows)
