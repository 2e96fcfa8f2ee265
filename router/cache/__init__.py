"""The semantic cache: a gateway stage answering repeated questions without a model call,
scoped per tenant and task class, its hits graded like any cheap answer
(:mod:`evaluator.cache_guard` sets each class's similarity threshold from those grades)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from router.cache.embed import (
    Embedder,
    EmbeddingPrice,
    EndpointEmbedder,
    WordLlamaEmbedder,
)
from router.cache.keys import BYPASS_REASONS, CacheKey, cache_key
from router.cache.models import CacheClassState, CacheEntry, CacheGuardEvent, CacheLookup
from router.cache.stage import STAGE_NAME, CacheStage, namespace_of
from router.cache.store import CacheStore, MemoryStore, PgVectorStore
from router.providers.base import Provider
from router.service import Router


def build_cache_stage(
    router: Router,
    sessions: async_sessionmaker[AsyncSession],
    *,
    embedder: str,
    upstream: Callable[[str], tuple[Provider, str]],
    dim: int,
    max_entries: int,
    flush_interval_s: float,
) -> CacheStage:
    """The cache stage on the database behind ``sessions``: pgvector on PostgreSQL, the
    in-memory search of at most ``max_entries`` on SQLite. ``embedder``: ``wordllama`` or a
    catalog model (an OpenAI-compatible embeddings endpoint through ``upstream``, ``dim``
    dimensions, priced from the catalog's embedding price, else its input price)."""
    bind = sessions.kw.get("bind")
    dialect = bind.dialect.name if bind is not None else "sqlite"
    store: CacheStore = (
        PgVectorStore(sessions)
        if dialect == "postgresql"
        else MemoryStore(sessions, max_entries=max_entries)
    )
    chosen: Embedder
    if embedder == "wordllama":
        chosen = WordLlamaEmbedder()
    else:

        def price() -> EmbeddingPrice | None:
            entry = router.snapshot.catalog.get(embedder)
            if entry is None:
                return None
            per_mtok = entry.embedding_input_usd_per_mtok
            if per_mtok is None:  # not `or`: an embedding price of 0 is a price
                per_mtok = entry.input_usd_per_mtok
            return EmbeddingPrice(per_mtok)

        chosen = EndpointEmbedder(embedder, upstream, dim=dim, price=price)
    return CacheStage(router, sessions, store, chosen, flush_interval_s=flush_interval_s)


__all__ = [
    "BYPASS_REASONS",
    "STAGE_NAME",
    "CacheClassState",
    "CacheEntry",
    "CacheGuardEvent",
    "CacheKey",
    "CacheLookup",
    "CacheStage",
    "CacheStore",
    "Embedder",
    "EndpointEmbedder",
    "MemoryStore",
    "PgVectorStore",
    "WordLlamaEmbedder",
    "build_cache_stage",
    "cache_key",
    "namespace_of",
]
