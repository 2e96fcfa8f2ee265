"""The cache guard's per-entry bars and the purge of expired entries, through the real gateway
(the official ``openai`` SDK over HTTP, loopback upstream, offline wordllama embeddings), the
real stores and the guard's job functions, on SQLite (in-memory search) and PostgreSQL
(pgvector). Verdicts are seeded: one false hit among graded hits that keep the class's own
threshold where it is (1 of 10 false: Wilson upper bound 0.404, under the test's target 0.5),
so what changes is the one entry's bar.

Similarities of the final user turns (wordllama l2_supercat-256, measured): SPAM to
SPAM_AGAIN 0.9154, to SPAM_CLOSE 0.9771, to SPAM_NEAR 0.9954; REVIEW to REVIEW_AGAIN 0.9574;
across the two topics under 0.14.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.cache_guard import (
    STEP,
    cache_guard_job,
    guard_rule,
    purge_expired_entries,
    run_cache_guard,
)
from evaluator.models import Grade
from router.cache import CacheEntry, CacheGuardEvent, CacheLookup, MemoryStore
from router.cache.keys import cache_key
from router.db import utcnow
from router.models import Sample
from tests.test_cache import CACHE_POLICY, SPAM, SPAM_AGAIN, CacheGateway, cache_on, user
from tests.wire import OPENAI_PATH

POLICY = CACHE_POLICY.replace(
    "cache_threshold = 0.80",
    "cache_threshold = 0.80\ncache_sample_rate = 1.0\ncache_false_hit_target = 0.5",
)
SPAM_CLOSE = "Is this spam? 'You won a prize'"
SPAM_NEAR = "Is this spam? 'You have won a prize!'"
REVIEW = "Is this review positive? 'I love this blender, it works great'"
REVIEW_AGAIN = "is this review positive: 'i love this blender, works great'"


class Seeded:
    """Two entries (SPAM's, REVIEW's) and ten graded hits on them, ``false`` (a key of
    :attr:`hits`) the one the reference disagreed with."""

    def __init__(self, gw: CacheGateway) -> None:
        self.gw = gw
        self.hits: dict[str, dict[str, str]] = {}
        self.entries: dict[str, str] = {}

    async def ask(self, text: str) -> dict[str, str]:
        return (await self.gw.ask(user(text)))[1]

    async def make(self, false: str) -> None:
        gw = self.gw
        gw.answer("spam")
        self.entries["spam"] = (await self.ask(SPAM))["x-tierwise-decision-id"]
        gw.answer("positive")
        self.entries["review"] = (await self.ask(REVIEW))["x-tierwise-decision-id"]
        for name, text in (("again", SPAM_AGAIN), ("exact", SPAM), ("near", SPAM_NEAR)):
            self.hits[name] = await self.ask(text)
        for i in range(7):
            self.hits[f"review{i}"] = await self.ask(REVIEW_AGAIN)
        assert {h["x-tierwise-cache"] for h in self.hits.values()} == {"hit"}
        assert len(gw.wire.hits(OPENAI_PATH)) == 2
        # The entries' ids, by the query each was made from.
        entries = {e.query_text: e.id for e in await gw.rows(CacheEntry)}
        self.entries = {"spam": entries[SPAM], "review": entries[REVIEW]}
        assert {self.hits[n]["x-tierwise-cache-entry"] for n in ("again", "exact", "near")} == {
            self.entries["spam"]
        }
        wrong = self.hits[false]["x-tierwise-decision-id"]
        samples = await gw.rows(Sample)
        assert len(samples) == 10
        async with gw.app.state.sessions() as session:
            session.add_all(
                Grade(
                    decision_id=s.decision_id,
                    task_class="classify",
                    model="cache",
                    reference_model="big",
                    grader="exact",
                    verdict="disagree" if s.decision_id == wrong else "agree",
                    parse_status="ok",
                    decided_at=s.decided_at,
                )
                for s in samples
            )
            await session.commit()

    async def similarity(self, name: str) -> float:
        """The similarity hit ``name`` was served at, as the guard reads it."""
        decision_id = self.hits[name]["x-tierwise-decision-id"]
        [row] = [r for r in await self.gw.rows(CacheLookup) if r.decision_id == decision_id]
        assert row.similarity is not None
        return float(row.similarity)

    async def bars(self) -> dict[str, float | None]:
        return {e.query_text: e.min_similarity for e in await self.gw.rows(CacheEntry)}

    async def serve_changes(self) -> None:
        """What the stage does once a second: re-read the guard's state (and, in memory,
        sync the store); then keep it from doing so again during the test."""
        await self.gw.cache.refresh_states()
        self.gw.cache._states_read_at = utcnow().timestamp()


async def test_a_false_semantic_hit_raises_that_entrys_bar_once(database_url: str) -> None:
    async with cache_on(database_url, POLICY) as gw:
        seeded = Seeded(gw)
        await seeded.make(false="again")
        # A second in-memory store, as a serving process would hold it (on PostgreSQL the
        # gateway's own store reads the bar with each search instead).
        held = MemoryStore(gw.app.state.sessions)
        assert await held.load(utcnow()) == 2
        sim = await seeded.similarity("again")
        assert round(sim, 4) == 0.9154

        events = await run_cache_guard(gw.app.state.sessions)
        bar = sim + STEP
        assert [(e.action, e.from_threshold, e.to_threshold, e.k, e.n) for e in events] == [
            ("entry-raise", 0.80, bar, 1, 3)
        ]
        [event] = await gw.rows(CacheGuardEvent)
        assert event.evidence == [
            {
                "entry_id": seeded.entries["spam"],
                "decision_id": seeded.hits["again"]["x-tierwise-decision-id"],
                "match": "semantic",
                "similarity": sim,
                "threshold": 0.80,
            }
        ]
        assert event.upper is not None and event.lower is not None
        assert event.lower < 1 / 3 < event.upper
        assert await seeded.bars() == {SPAM: bar, REVIEW: None}

        # The serving side: the in-memory store takes the bar on its next sync.
        assert len(held) == 2
        [before] = [
            c
            for c in await held.nearest(
                _scope(await gw.rows(CacheEntry)), 256, await _vector(gw, SPAM_AGAIN), utcnow()
            )
            if c.entry_id == seeded.entries["spam"]
        ]
        assert before.min_similarity is None
        assert await held.sync(utcnow()) == 1
        assert await held.sync(utcnow()) == 0
        [after] = [
            c
            for c in await held.nearest(
                _scope(await gw.rows(CacheEntry)), 256, await _vector(gw, SPAM_AGAIN), utcnow()
            )
            if c.entry_id == seeded.entries["spam"]
        ]
        assert after.min_similarity == bar

        await seeded.serve_changes()
        # Closer than the false hit: still served by the same entry.
        close = await seeded.ask(SPAM_CLOSE)
        assert (close["x-tierwise-cache"], close["x-tierwise-cache-entry"]) == (
            "hit",
            seeded.entries["spam"],
        )
        # The same near-duplicate now misses (its best candidate is still that entry).
        gw.answer("not spam")
        again = await seeded.ask(SPAM_AGAIN)
        assert again["x-tierwise-cache"] == "miss"
        assert again["x-tierwise-cache-similarity"] == f"{sim:.4f}"
        assert len(gw.wire.hits(OPENAI_PATH)) == 3
        # Other entries, and the exact repeat, are served as before.
        review = await seeded.ask(REVIEW_AGAIN)
        assert (review["x-tierwise-cache"], review["x-tierwise-cache-entry"]) == (
            "hit",
            seeded.entries["review"],
        )
        exact = await seeded.ask(SPAM)
        assert (exact["x-tierwise-cache-match"], exact["x-tierwise-cache-entry"]) == (
            "exact",
            seeded.entries["spam"],
        )

        # Idempotent: the grade is handled, the state says so; a second run (the job) changes
        # nothing and writes no event.
        job = cache_guard_job(gw.app.state.sessions, interval_s=300)
        assert await job.run(utcnow()) == {
            "changes": 0,
            "entries_raised": 0,
            "entries_forgotten": 0,
        }
        assert len(await gw.rows(CacheGuardEvent)) == 1
        assert (await seeded.bars())[SPAM] == bar


@pytest.mark.parametrize("false", ["exact", "near"])
async def test_an_exact_false_hit_or_one_past_the_top_forgets_the_entry(
    database_url: str, false: str
) -> None:
    """An exact false hit: the answer was wrong for its own request. A semantic one at
    0.9954: a bar of 0.9954 + 0.005 would pass 1.0."""
    async with cache_on(database_url, POLICY) as gw:
        seeded = Seeded(gw)
        await seeded.make(false=false)
        sim = await seeded.similarity(false)
        assert round(sim, 4) == {"exact": 1.0, "near": 0.9954}[false]
        events = await run_cache_guard(gw.app.state.sessions)
        assert [(e.action, e.from_threshold, e.to_threshold, e.k, e.n) for e in events] == [
            ("entry-forget", 0.80, None, 1, 3)
        ]
        assert events[0].evidence[0]["match"] == {"exact": "exact", "near": "semantic"}[false]
        assert await seeded.bars() == {REVIEW: None}
        await seeded.serve_changes()
        store = gw.cache.store
        if isinstance(store, MemoryStore):
            assert len(store) == 1
        gw.answer("not spam")
        assert (await seeded.ask(SPAM))["x-tierwise-cache"] == "miss"
        assert len(gw.wire.hits(OPENAI_PATH)) == 3
        assert (await seeded.ask(REVIEW_AGAIN))["x-tierwise-cache"] == "hit"
        assert await run_cache_guard(gw.app.state.sessions) == []
        assert len(await gw.rows(CacheGuardEvent)) == 1


def _scope(entries: list[CacheEntry]) -> str:
    [scope] = {e.scope for e in entries}
    return scope


async def _vector(gw: CacheGateway, text: str) -> Any:
    """The embedding of ``text`` as the stage makes it (of the normalised final turn; the
    vector does not depend on the scope's parts)."""
    key = cache_key(
        {"model": "tierwise/classify", "messages": user(text)},
        namespace="open",
        task_class="classify",
        model="small",
        route_version=1,
        max_temperature=None,
    )
    assert not isinstance(key, str)
    return (await gw.cache.embedder.embed([key.query])).vectors[0]


def test_fewer_than_min_off_hits_at_the_top_threshold_change_nothing() -> None:
    """With fewer than MIN_OFF_N graded hits the rule raises to the top instead of switching
    off, and once there it waits for them (the module doc); it used to switch off then."""
    few = [(1.0, True), (0.99, False)]
    raised = guard_rule(0.95, few, target=0.01)
    assert raised is not None and (raised.action, raised.to_threshold) == ("raise", 0.995)
    assert guard_rule(0.995, few, target=0.01) is None
    off = guard_rule(0.995, [(1.0, True), *[(0.999, False)] * 29], target=0.01)
    assert off is not None and (off.action, off.n) == ("off", 30)


def _row(i: int, expires_at: Any) -> dict[str, Any]:
    vector = np.zeros(4, dtype=np.float32)
    vector[i % 4] = 1.0
    return {
        "id": f"{i:032x}",
        "namespace": "open",
        "task_class": "classify",
        "model": "small",
        "route_version": 1,
        "scope": "s" * 64,
        "key_hash": f"{i:064x}",
        "embedder": "test",
        "dim": 4,
        "embedding": vector,
        "query_text": f"question {i}",
        "answer_text": f"answer {i}",
        "response": {"choices": [{"message": {"role": "assistant", "content": str(i)}}]},
        "usage": None,
        "min_similarity": None,
        "created_at": expires_at - timedelta(hours=1),
        "expires_at": expires_at,
    }


async def test_the_purge_deletes_only_expired_entries_in_bounded_batches(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = utcnow()
    expired = [_row(i, now - timedelta(minutes=i + 1)) for i in range(5)]
    expired.append(_row(5, now))  # expires_at == now: no longer served, so expired
    live = [_row(i, now + timedelta(minutes=i)) for i in range(6, 9)]
    store = MemoryStore(sessions)
    await store.put([*expired, *live])
    async with sessions() as session:
        session.add(
            CacheLookup(
                decision_id="d-old",
                task_class="classify",
                namespace="open",
                model="small",
                outcome="hit",
                entry_id=expired[0]["id"],
                created_at=now - timedelta(days=400),
            )
        )
        await session.commit()

    # The in-memory store lets go of what expired (the database keeps it until the purge).
    assert len(store) == 9
    assert store.drop_expired(now) == 6
    assert len(store) == 3
    found = await store.nearest("s" * 64, 4, np.array([1, 0, 0, 0], dtype=np.float32), now)
    assert sorted(c.entry_id for c in found) == sorted(r["id"] for r in live)

    first = await purge_expired_entries(sessions, now=now, batch_size=2, max_batches=2)
    assert (first.deleted, first.batches, first.more) == (4, 2, True)
    async with sessions() as session:
        left = sorted((await session.exec(select(CacheEntry.id))).all())
    # The oldest expiry went first: left are the two expired last (1 min ago, now) and the live.
    assert left == sorted([expired[0]["id"], expired[5]["id"], *(r["id"] for r in live)])
    rest = await purge_expired_entries(sessions, now=now, batch_size=2, max_batches=2)
    assert (rest.deleted, rest.batches, rest.more) == (2, 1, False)
    async with sessions() as session:
        left = sorted((await session.exec(select(CacheEntry.id))).all())
        lookups = (await session.exec(select(sa.func.count()).select_from(CacheLookup))).one()
    assert left == sorted(r["id"] for r in live)
    assert lookups == 1
    nothing = await purge_expired_entries(sessions, now=now)
    assert (nothing.deleted, nothing.batches, nothing.more) == (0, 0, False)
