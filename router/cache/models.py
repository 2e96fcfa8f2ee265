"""Tables of the semantic cache (:mod:`router.cache`) and of its quality guard
(:mod:`evaluator.cache_guard`).

``cache_entry.embedding`` is a pgvector ``vector`` on PostgreSQL (searched through a partial
HNSW index per dimension, cosine distance) and the float32 bytes of the unit vector on SQLite
(searched in memory, :class:`router.cache.store.MemoryStore`). Money is whole nano-USD (NULL =
unpriced); similarities are cosine similarities in [-1, 1]; timestamps UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, UserDefinedType
from sqlmodel import Field, SQLModel

from router.db import JSONDict, JSONList, JSONTrackingModel, UTCDateTime, utcnow


def vector_text(vector: np.ndarray[Any, Any]) -> str:
    """pgvector's text form of a vector: ``[0.1,0.2,...]`` (float32 values, shortest repr)."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


class PgVector(UserDefinedType[bytes]):
    """pgvector's ``vector`` (no fixed dimension: the HNSW indexes are partial, per ``dim``),
    seen from Python as the float32 bytes of the vector (as ``BLOB`` is on SQLite): bound as
    pgvector's text form, read back from it. Registered for reflection under its name."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: Any) -> str | None:
            if value is None:
                return None
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = np.frombuffer(bytes(value), dtype=np.float32)
            return vector_text(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        def process(value: Any) -> bytes | None:
            if value is None:
                return None
            if isinstance(value, (bytes, bytearray, memoryview)):
                return bytes(value)
            text = str(value).strip("[]")
            numbers = [float(x) for x in text.split(",")] if text else []
            return np.array(numbers, dtype=np.float32).tobytes()

        return process


ischema_names["vector"] = PgVector


class Embedding(TypeDecorator[np.ndarray[Any, Any]]):
    """A unit vector: pgvector ``vector`` on PostgreSQL, float32 bytes on SQLite. Bound from
    and read back as a float32 numpy array."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(PgVector())
        return dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        return np.asarray(value, dtype=np.float32).tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return np.frombuffer(bytes(value), dtype=np.float32)


class CacheEntry(JSONTrackingModel, table=True):
    """One cached answer.

    Scoped by ``scope``, a SHA-256 of (namespace, task class, model, the class's routing-table
    entry version, ``context_hash``): a lookup only ever sees entries of its own tenant
    (``namespace``: the caller's key id, or an explicit namespace), class, routed model and
    route (any change of the class's routing entry, an escalation first of all, retires the
    entries made before it), and of the same everything-but-the-last-user-turn
    (``context_hash``). ``key_hash`` is the exact-match key (the whole normalised request in
    the same scope). ``embedding`` is the unit vector of the final user turn (``dim``
    dimensions, by ``embedder``). ``min_similarity``: the bar this entry needs beyond the
    class's threshold (raised by the guard after the entry produced a false hit). ``response``
    is the completion body served on a hit; ``usage`` the upstream's usage of the call that
    made it (what a hit saves is priced from it).
    """

    __tablename__ = "cache_entry"

    id: str = Field(primary_key=True, max_length=32)
    namespace: str = Field(max_length=200)
    task_class: str = Field(max_length=200)
    model: str = Field(max_length=128)
    route_version: int
    scope: str = Field(max_length=64, index=True)
    key_hash: str = Field(max_length=64, index=True)
    embedder: str = Field(max_length=128)
    dim: int
    embedding: Any = Field(sa_type=Embedding, nullable=False)
    query_text: str = Field(sa_type=sa.Text)
    answer_text: str | None = Field(default=None, sa_type=sa.Text)
    response: dict[str, Any] = Field(sa_type=JSONDict)
    usage: dict[str, Any] | None = Field(default=None, sa_type=JSONDict)
    min_similarity: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class CacheLookup(JSONTrackingModel, table=True):
    """What the cache did for one gateway call (one row per call the stage saw).

    ``outcome``: ``hit`` | ``miss`` | ``bypass``; ``reason`` why a call bypassed the cache
    (:data:`router.cache.keys.BYPASS_REASONS`) or, for a miss, ``stored`` / ``not_stored``
    is not tracked (None). ``match``: ``exact`` | ``semantic`` for a hit; ``similarity`` the
    best candidate's cosine similarity (a miss too, when there was a candidate). ``saved_nusd``:
    a hit's replaced call priced at the routed model from the entry's usage (NULL: unpriced);
    ``embedding_nusd`` the lookup's embedding spend (0 for the offline embedder, NULL:
    unpriced). ``sampled``: the hit is graded (the guard's evidence).
    """

    __tablename__ = "cache_lookup"

    decision_id: str = Field(primary_key=True, max_length=64)
    task_class: str = Field(max_length=200, index=True)
    namespace: str = Field(max_length=200)
    model: str = Field(max_length=128)
    route_version: int = 0
    outcome: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=32)
    match: str | None = Field(default=None, max_length=16)
    similarity: float | None = None
    threshold: float | None = None
    entry_id: str | None = Field(default=None, max_length=32)
    sampled: bool = False
    saved_nusd: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    embedding_tokens: int = 0
    embedding_nusd: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class CacheClassState(SQLModel, table=True):
    """The guard's setting for one class: the similarity ``threshold`` semantic hits need and
    whether the cache is ``enabled`` for it (the guard turns it off where no threshold keeps
    false hits under the target). ``model``/``route_version``: the route the setting was
    learnt on (a new route starts again from the policy's ``cache_threshold``)."""

    __tablename__ = "cache_class_state"

    task_class: str = Field(primary_key=True, max_length=200)
    threshold: float
    enabled: bool = True
    model: str = Field(max_length=128)
    route_version: int
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CacheGuardEvent(JSONTrackingModel, table=True):
    """A change the quality guard made to a class's cache, with its evidence: ``action``
    (``raise`` | ``lower`` | ``off``), the thresholds before and after, and at the threshold
    that decided it the graded hits ``n``, the false hits ``k``, the rate and its Wilson
    interval at ``confidence``, the ``target``; ``evidence`` holds the per-threshold counts
    the rule looked at (``[{"threshold", "k", "n", "upper"}]``). A change to one entry is
    ``entry-raise`` | ``entry-forget``: its bar before and after, the entry's own k of n, and
    its false hits in ``evidence`` (``[{"entry_id", "decision_id", "match", "similarity",
    "threshold"}]``; :mod:`evaluator.cache_guard`)."""

    __tablename__ = "cache_guard_event"

    id: int | None = Field(default=None, primary_key=True)
    task_class: str = Field(max_length=200, index=True)
    model: str = Field(max_length=128)
    action: str = Field(max_length=16)
    from_threshold: float
    to_threshold: float | None = None
    k: int
    n: int
    rate: float | None = None
    lower: float | None = None
    upper: float | None = None
    confidence: float = 0.95
    target: float
    reason: str = Field(sa_type=sa.Text)
    evidence: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONList)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
