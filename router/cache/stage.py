"""The semantic cache as a gateway stage (:class:`router.gateway.service.Stage`).

``before`` (on the hot path): a request the cache cannot key safely, or of a class with
``cache = false``, or whose cache the quality guard turned off, bypasses it (counted per reason
in :attr:`CacheStage.bypassed` and recorded). Otherwise the exact key is looked up, then the
final user turn is embedded and its nearest entries in the request's scope searched
(:mod:`router.cache.keys`); a candidate hits when its similarity reaches the class's threshold
(the guard's, else the policy's ``cache_threshold``) and the entry's own bar
(``min_similarity``, raised by the guard after the entry's false hit; an exact match needs
neither). A hit answers the call (streamed when the caller streams) with headers
``x-tierwise-cache: hit``, ``x-tierwise-cache-match`` (exact | semantic) and
``x-tierwise-cache-similarity``; a miss says ``miss`` (with the best similarity seen, if any)
and ``after`` stores the upstream's answer when the call ended ok on the routed model itself
(a fallback's answer is not cached: an entry is valid only for the model the class is routed
to). A hit is sampled for grading by a
hash of its decision id at the class's ``cache_sample_rate`` (:func:`router.sampling`), so the
grading job grades it like any cheap answer: the sample's model is ``cache``, which keeps its
verdicts out of the escalation rule and in the guard's evidence
(:mod:`evaluator.cache_guard`).

Every lookup writes a ``cache_lookup`` row (through the stage's own batch writer, off the hot
path): outcome, reason, similarity, the threshold used, what a hit saved (the entry's usage
priced at the routed model's current price) and the embedding spend.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.cache.embed import Embedder
from router.cache.keys import CacheKey, cache_key
from router.cache.models import CacheClassState, CacheEntry, CacheLookup
from router.cache.store import CacheStore, Candidate, new_entry_id
from router.db import utcnow
from router.gateway.service import Call, CallResult
from router.pricing import cost_nusd, normalize_usage
from router.providers.base import Completion, ProviderError
from router.sampling import is_sampled
from router.service import Router
from router.writer import BatchWriter

log = logging.getLogger(__name__)

STAGE_NAME = "cache"
"""The served model recorded for a call the cache answered."""

STATE_REFRESH_S = 1.0
"""How often the guard's per-class thresholds are re-read from the database (s)."""


def namespace_of(caller: str | None, explicit: str | None) -> str:
    """The tenant an entry belongs to: the caller's key id (``open`` without keys), refined by
    an explicit ``X-Tierwise-Namespace``; never shared across keys."""
    base = f"key:{caller}" if caller is not None else "open"
    return base if explicit is None else f"{base}/ns:{explicit}"


class CacheStage:
    """The semantic cache stage.

    Args:
        router: the data plane (snapshot: policy, routing entries, catalog).
        sessions: the database (lookup rows, the guard's state).
        store: where entries are searched (:class:`PgVectorStore` / :class:`MemoryStore`).
        embedder: texts -> unit vectors.
        flush_interval_s: how often lookup rows are written.
    """

    name = STAGE_NAME

    def __init__(
        self,
        router: Router,
        sessions: async_sessionmaker[AsyncSession],
        store: CacheStore,
        embedder: Embedder,
        *,
        flush_interval_s: float = 0.2,
    ) -> None:
        self._router = router
        self._sessions = sessions
        self.store = store
        self.embedder = embedder
        self.writer = BatchWriter(sessions, [CacheLookup], flush_interval_s=flush_interval_s)
        self.bypassed: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._states: dict[str, CacheClassState] = {}
        self._states_read_at = -1.0
        self._clock = utcnow

    async def start(self) -> None:
        """Read the guard's state (and, for the in-memory store, the entries); start writing."""
        load = getattr(self.store, "load", None)
        if load is not None:
            await load(self._clock())
        await self.refresh_states()
        await self.writer.start()

    async def stop(self) -> None:
        """Write what is left and stop."""
        await self.writer.stop()

    async def flush(self) -> None:
        """Write the lookup rows held now (tests and shutdown)."""
        await self.writer.flush()

    async def refresh_states(self) -> None:
        """Re-read the guard's per-class state; a store that holds entries in memory
        (:meth:`router.cache.store.MemoryStore.sync`) also drops its expired entries and
        applies the guard's per-entry bars written since its last sync."""
        async with self._sessions() as session:
            rows = (await session.exec(select(CacheClassState))).all()
        self._states = {r.task_class: r for r in rows}
        sync = getattr(self.store, "sync", None)
        if sync is not None:
            await sync(self._clock())

    async def _state(self, task_class: str, model: str, route_version: int) -> tuple[float, bool]:
        """The class's threshold and whether its cache is on, for its current route."""
        now = self._clock().timestamp()
        if now - self._states_read_at >= STATE_REFRESH_S:
            self._states_read_at = now
            try:
                await self.refresh_states()
            except Exception:  # the last state read stays in force
                log.exception("cache: could not read the guard's state")
        settings = self._router.snapshot.policy.settings_for(task_class)
        state = self._states.get(task_class)
        if state is None or state.model != model or state.route_version != route_version:
            return settings.cache_threshold, True
        return state.threshold, state.enabled

    def _bypass(self, call: Call, reason: str, model: str, route_version: int) -> None:
        self.bypassed[reason] += 1
        self.outcomes["bypass"] += 1
        call.headers["x-tierwise-cache"] = "bypass"
        call.headers["x-tierwise-cache-bypass"] = reason
        self._lookup_row(call, model, route_version, outcome="bypass", reason=reason)

    def _lookup_row(self, call: Call, model: str, route_version: int, **values: Any) -> None:
        d = call.decision
        row = {
            "decision_id": d.decision_id,
            "task_class": d.task_class,
            "namespace": namespace_of(call.decision_row.get("caller"), call.request.namespace),
            "model": model,
            "route_version": route_version,
            "outcome": "miss",
            "reason": None,
            "match": None,
            "similarity": None,
            "threshold": None,
            "entry_id": None,
            "sampled": False,
            "saved_nusd": None,
            "embedding_tokens": 0,
            "embedding_nusd": 0,
            "created_at": self._clock(),
        }
        row.update(values)
        self.writer.add(CacheLookup, row)

    def _saved(self, candidate: Candidate, model: str) -> int | None:
        """What the replaced call would have cost: the entry's usage at ``model``'s price."""
        if candidate.usage is None:
            return None
        try:
            usage = normalize_usage(candidate.usage)
        except Exception:
            return None
        return cost_nusd(usage, self._router.snapshot.catalog.get(model))

    # ---- the stage --------------------------------------------------------------------------
    async def before(self, call: Call) -> Completion | None:
        d = call.decision
        snapshot = self._router.snapshot
        entry = snapshot.entries.get(d.task_class)
        route_version = entry.version if entry is not None else 0
        model = d.model
        if call.request.shadow_model is not None:
            self._bypass(call, "shadow", model, route_version)
            return None
        settings = snapshot.policy.settings_for(d.task_class)
        if not settings.cache:
            self._bypass(call, "class_off", model, route_version)
            return None
        threshold, enabled = await self._state(d.task_class, model, route_version)
        if not enabled:
            self._bypass(call, "guard_off", model, route_version)
            return None
        namespace = namespace_of(call.decision_row.get("caller"), call.request.namespace)
        key = cache_key(
            call.request.body,
            namespace=namespace,
            task_class=d.task_class,
            model=model,
            route_version=route_version,
            max_temperature=settings.cache_max_temperature,
        )
        if isinstance(key, str):
            self._bypass(call, key, model, route_version)
            return None
        now = self._clock()
        found = await self.store.exact(key.key_hash, now)
        match = "exact"
        embedded = None
        best: Candidate | None = None
        if found is None:
            match = "semantic"
            try:
                embedded = await self.embedder.embed([key.query])
            except ProviderError as exc:
                log.warning("cache: embedding failed, bypassing: %s", exc.message)
                self._bypass(call, "embedding_failed", model, route_version)
                return None
            candidates = await self.store.nearest(
                key.scope, self.embedder.dim, embedded.vectors[0], now
            )
            best = candidates[0] if candidates else None
            for c in candidates:
                if c.similarity >= max(threshold, c.min_similarity or 0.0):
                    found = c
                    break
        spend = {
            "embedding_tokens": embedded.tokens if embedded is not None else 0,
            "embedding_nusd": embedded.cost_nusd if embedded is not None else 0,
        }
        if found is None:
            self.outcomes["miss"] += 1
            call.headers["x-tierwise-cache"] = "miss"
            if best is not None:
                call.headers["x-tierwise-cache-similarity"] = f"{best.similarity:.4f}"
            call.state[STAGE_NAME] = (key, embedded, model, route_version, settings.cache_ttl_s)
            self._lookup_row(
                call,
                model,
                route_version,
                outcome="miss",
                similarity=best.similarity if best is not None else None,
                threshold=threshold,
                **spend,
            )
            return None
        self.outcomes["hit"] += 1
        sampled = is_sampled(d.decision_id, settings.cache_sample_rate)
        call.decision = replace(d, sampled=sampled)
        call.decision_row = {**call.decision_row, "sampled": sampled}
        call.answer_cost_nusd = 0
        call.headers.update(
            {
                "x-tierwise-cache": "hit",
                "x-tierwise-cache-match": match,
                "x-tierwise-cache-similarity": f"{found.similarity:.4f}",
                "x-tierwise-cache-entry": found.entry_id,
                "x-tierwise-sampled": "true" if sampled else "false",
            }
        )
        self._lookup_row(
            call,
            model,
            route_version,
            outcome="hit",
            match=match,
            similarity=found.similarity,
            threshold=threshold,
            entry_id=found.entry_id,
            sampled=sampled,
            saved_nusd=self._saved(found, model),
            **spend,
        )
        body = {
            **found.response,
            "id": f"chatcmpl-{d.decision_id}",
            "created": int(now.timestamp()),
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        return Completion(body=body, usage={"prompt_tokens": 0, "completion_tokens": 0})

    async def after(self, call: Call, result: CallResult) -> None:
        kept = call.state.get(STAGE_NAME)
        if kept is None:
            return
        key, embedded, model, route_version, ttl_s = kept
        if (
            result.status != "ok"
            or result.served_model != model
            or result.message is None
            or result.text is None
        ):
            return
        if embedded is None:
            embedded = await self.embedder.embed([key.query])
        await self.store.put(
            [self.entry_row(call, key, embedded.vectors[0], model, route_version, ttl_s, result)]
        )

    def entry_row(
        self,
        call: Call,
        key: CacheKey,
        vector: Any,
        model: str,
        route_version: int,
        ttl_s: float,
        result: CallResult,
    ) -> dict[str, Any]:
        """The ``cache_entry`` row of a call's answer."""
        now = self._clock()
        message = dict(result.message or {})
        message.setdefault("role", "assistant")
        response = {
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": result.finish_reason or "stop",
                }
            ],
        }
        return {
            "id": new_entry_id(),
            "namespace": namespace_of(call.decision_row.get("caller"), call.request.namespace),
            "task_class": call.decision.task_class,
            "model": model,
            "route_version": route_version,
            "scope": key.scope,
            "key_hash": key.key_hash,
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "embedding": vector,
            "query_text": key.query,
            "answer_text": result.text,
            "response": response,
            "usage": result.usage,
            "min_similarity": None,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
        }


__all__ = ["STAGE_NAME", "CacheEntry", "CacheStage", "namespace_of"]
