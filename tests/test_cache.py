"""The semantic cache through the gateway, driven by the official ``openai`` SDK over real HTTP
against loopback upstreams (``tests/wire.py``), on SQLite (in-memory search) and PostgreSQL
(pgvector HNSW), with the offline wordllama embedder. Verdicts of the guard's test are seeded
(a stream of false hits); everything else is the real stage, store, tables and job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import openai
from pydantic import SecretStr
from sqlmodel import select

from evaluator.cache_books import cache_books
from evaluator.cache_guard import guard_rule, run_cache_guard
from evaluator.costs import costs
from evaluator.models import Grade
from router.cache import CacheEntry, CacheGuardEvent, CacheLookup, CacheStage, namespace_of
from router.cache.warm import warm
from router.db import make_engine, session_factory, utcnow
from router.keys import create_key
from router.models import Sample
from router.policy import parse_policy
from router.table import change_class
from tests.conftest import apply, make_settings
from tests.serving import served
from tests.test_gateway import POLICY
from tests.wire import OPENAI_PATH, Reply, WireServer, openai_chat, openai_usage
from tierwise.app import create_app

CACHE_POLICY = (
    POLICY.replace("sample_rate = 1.0", "sample_rate = 0.0\ncache_threshold = 0.80")
    + """
[[classes]]
match = "summarize"
cache = false
"""
)


class CacheGateway:
    def __init__(self, url: str, wire: WireServer, app: Any, database_url: str) -> None:
        self.url = url
        self.wire = wire
        self.app = app
        self.database_url = database_url

    @property
    def cache(self) -> CacheStage:
        stage: CacheStage = self.app.state.cache
        return stage

    def client(self, key: str = "caller-key") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    async def ask(
        self, messages: list[dict[str, Any]], *, key: str = "caller-key", **kw: Any
    ) -> tuple[str | None, dict[str, str]]:
        """One call; the answer and the response headers."""
        async with self.client(key) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model=kw.pop("model", "tierwise/classify"),
                messages=messages,  # type: ignore[arg-type]
                **kw,
            )
            return raw.parse().choices[0].message.content, dict(raw.headers)

    def answer(self, text: str) -> None:
        usage = openai_usage(100, 20)
        self.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat(text, usage=usage)))

    async def rows(self, table: Any) -> list[Any]:
        await self.cache.flush()
        await self.app.state.router.flush()
        engine = make_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                return list((await session.exec(select(table))).all())
        finally:
            await engine.dispose()


@asynccontextmanager
async def cache_on(database_url: str, policy: str = CACHE_POLICY) -> AsyncIterator[CacheGateway]:
    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(policy))
    await engine.dispose()
    with WireServer() as wire:
        settings = make_settings(
            database_url,
            openai_api_key=SecretStr("sk-upstream"),
            openai_base_url=wire.openai_base_url,
            anthropic_api_key=SecretStr("sk-ant-upstream"),
            anthropic_base_url=wire.anthropic_base_url,
            cache=True,
        )
        app = create_app(settings)
        async with served(app) as url:
            yield CacheGateway(url, wire, app, database_url)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


SPAM = "Is this spam? 'You won a prize!'"
SPAM_AGAIN = "is this spam:  'you won a prize'"


async def test_a_repeat_hits_exactly_and_a_paraphrase_semantically(database_url: str) -> None:
    async with cache_on(database_url) as gw:
        gw.answer("spam")
        text, headers = await gw.ask(user(SPAM))
        assert (text, headers["x-tierwise-cache"]) == ("spam", "miss")
        text, headers = await gw.ask(user(SPAM))
        assert text == "spam"
        assert headers["x-tierwise-cache"] == "hit"
        assert headers["x-tierwise-cache-match"] == "exact"
        assert headers["x-tierwise-model"] == "cache"
        text, headers = await gw.ask(user(SPAM_AGAIN))
        assert text == "spam"
        assert headers["x-tierwise-cache-match"] == "semantic"
        assert 0.80 <= float(headers["x-tierwise-cache-similarity"]) < 1.0
        assert len(gw.wire.hits(OPENAI_PATH)) == 1
        lookups = sorted(await gw.rows(CacheLookup), key=lambda r: r.created_at)
        assert [(r.outcome, r.match) for r in lookups] == [
            ("miss", None),
            ("hit", "exact"),
            ("hit", "semantic"),
        ]
        # A hit saves the call it replaced: the entry's usage (100 in, 20 out) at small's
        # price (0.15 / 0.60 USD per 1M) = 15,000 + 12,000 nano-USD.
        assert [r.saved_nusd for r in lookups[1:]] == [27_000, 27_000]
        # Streaming callers get the cached answer as a stream.
        async with gw.client() as client:
            stream = await client.chat.completions.create(
                model="tierwise/classify",
                messages=[{"role": "user", "content": SPAM}],
                stream=True,
            )
            parts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(p for p in parts if p) == "spam"
        assert len(gw.wire.hits(OPENAI_PATH)) == 1


async def test_two_keys_never_see_each_others_entries(database_url: str) -> None:
    engine = make_engine(database_url)
    async with session_factory(engine)() as session:
        first = await create_key(session, "tenant-a", ["route"])
        second = await create_key(session, "tenant-b", ["route"])
        await session.commit()
    await engine.dispose()
    async with cache_on(database_url) as gw:
        gw.answer("spam for a")
        gw.answer("spam for b")
        assert (await gw.ask(user(SPAM), key=first.key))[0] == "spam for a"
        text, headers = await gw.ask(user(SPAM), key=second.key)
        assert (text, headers["x-tierwise-cache"]) == ("spam for b", "miss")
        # Each key now hits its own entry only.
        assert (await gw.ask(user(SPAM), key=first.key))[0] == "spam for a"
        assert (await gw.ask(user(SPAM_AGAIN), key=second.key))[0] == "spam for b"
        # An explicit namespace is a tenant within the key.
        gw.answer("spam for a's customer")
        text, headers = await gw.ask(
            user(SPAM), key=first.key, extra_headers={"x-tierwise-namespace": "customer-1"}
        )
        assert (text, headers["x-tierwise-cache"]) == ("spam for a's customer", "miss")
        entries = await gw.rows(CacheEntry)
        assert sorted(e.namespace for e in entries) == sorted(
            [
                f"key:{first.info.id}",
                f"key:{second.info.id}",
                f"key:{first.info.id}/ns:customer-1",
            ]
        )


async def test_a_multi_turn_request_never_hits_on_its_last_turn_alone(
    database_url: str,
) -> None:
    conversation = [
        {"role": "user", "content": "I got an email from my bank."},
        {"role": "assistant", "content": "What does it say?"},
        {"role": "user", "content": SPAM},
    ]
    async with cache_on(database_url) as gw:
        gw.answer("spam")
        gw.answer("it depends on the sender")
        await gw.ask(user(SPAM))
        text, headers = await gw.ask(conversation)
        assert (text, headers["x-tierwise-cache"]) == ("it depends on the sender", "miss")
        # The same conversation again hits its own entry.
        text, headers = await gw.ask(conversation)
        assert (text, headers["x-tierwise-cache"]) == ("it depends on the sender", "hit")
        # A different system prompt is a different scope.
        gw.answer("ham")
        text, headers = await gw.ask([{"role": "system", "content": "Be lenient."}, *user(SPAM)])
        assert (text, headers["x-tierwise-cache"]) == ("ham", "miss")
        assert len(gw.wire.hits(OPENAI_PATH)) == 3


async def test_an_escalation_retires_the_cheap_models_answers(database_url: str) -> None:
    async with cache_on(database_url) as gw:
        gw.answer("spam (small)")
        await gw.ask(user(SPAM))
        assert (await gw.ask(user(SPAM)))[1]["x-tierwise-cache"] == "hit"
        async with gw.app.state.sessions() as session:
            await change_class(session, "classify", model="big", status="escalated")
            await session.commit()
        await gw.app.state.router.refresh(force=True)
        gw.answer("spam (big)")
        text, headers = await gw.ask(user(SPAM))
        assert (text, headers["x-tierwise-cache"], headers["x-tierwise-model"]) == (
            "spam (big)",
            "miss",
            "big",
        )
        assert gw.wire.hits(OPENAI_PATH)[-1].body["model"] == "big"
        assert (await gw.ask(user(SPAM)))[0] == "spam (big)"


async def test_a_cache_false_class_is_never_cached_and_bypasses_are_counted(
    database_url: str,
) -> None:
    async with cache_on(database_url) as gw:
        gw.wire.enqueue("/v1/messages", Reply(body=_anthropic("summary")))
        gw.wire.enqueue("/v1/messages", Reply(body=_anthropic("summary")))
        for _ in range(2):
            text, headers = await gw.ask(
                user("Summarise the contract."), model="tierwise/summarize"
            )
            assert (text, headers["x-tierwise-cache"]) == ("summary", "bypass")
            assert headers["x-tierwise-cache-bypass"] == "class_off"
        gw.answer("a")
        gw.answer("b")
        for reply in ("a", "b"):
            text, headers = await gw.ask(user(SPAM), n=2, model="tierwise/code_generation")
            assert (text, headers["x-tierwise-cache-bypass"]) == (reply, "n_above_1")
        assert await gw.rows(CacheEntry) == []
        assert gw.cache.bypassed == {"class_off": 2, "n_above_1": 2}
        lookups = await gw.rows(CacheLookup)
        assert sorted((r.task_class, r.reason) for r in lookups) == [
            ("code_generation", "n_above_1"),
            ("code_generation", "n_above_1"),
            ("summarize", "class_off"),
            ("summarize", "class_off"),
        ]


def _anthropic(text: str) -> dict[str, Any]:
    from tests.wire import anthropic_message

    return anthropic_message(text)


async def test_the_guard_raises_the_threshold_on_a_stream_of_false_hits(
    database_url: str,
) -> None:
    policy = CACHE_POLICY.replace(
        "cache_threshold = 0.80", "cache_threshold = 0.80\ncache_sample_rate = 1.0"
    )
    paraphrases = [SPAM_AGAIN, "is this spam - 'you won a prize'", "Is this spam? You won a prize"]
    async with cache_on(database_url, policy) as gw:
        gw.answer("spam")
        await gw.ask(user(SPAM))
        sims = []
        for text in paraphrases * 2:
            reply, headers = await gw.ask(user(text))
            assert headers["x-tierwise-cache-match"] == "semantic"
            assert headers["x-tierwise-sampled"] == "true"
            sims.append(float(headers["x-tierwise-cache-similarity"]))
        samples = await gw.rows(Sample)
        assert {s.model for s in samples} == {"cache"}
        assert len(samples) == 6
        # The seeded stream: the reference disagreed with every one of these hits.
        async with gw.app.state.sessions() as session:
            session.add_all(
                Grade(
                    decision_id=s.decision_id,
                    task_class="classify",
                    model="cache",
                    reference_model="big",
                    grader="exact",
                    verdict="disagree",
                    parse_status="ok",
                    decided_at=s.decided_at,
                )
                for s in samples
            )
            await session.commit()
        async with gw.app.state.sessions() as session:
            books = await cache_books(
                session, utcnow() - timedelta(hours=1), utcnow() + timedelta(hours=1)
            )
        assert [(b.task_class, b.lookups, b.hits, b.misses) for b in books] == [
            ("classify", 7, 6, 1)
        ]
        assert (books[0].false_hit_rate.k, books[0].false_hit_rate.n) == (6, 6)
        assert books[0].saved_nusd == 6 * 27_000
        # The cost view carries the same figures per class, from the same rows.
        async with gw.app.state.sessions() as session:
            view = await costs(session, group_by=["task_class"])
        row = next(r for r in view.rows if r.key["task_class"] == "classify")
        assert (row.cache_lookups, row.cache_hits, row.cache_saved_nusd) == (7, 6, 6 * 27_000)
        assert (row.cache_graded_hits, row.cache_false_hits) == (6, 6)
        assert row.cache_hit_rate == 6 / 7
        low, high = row.to_dict()["cache_false_hit_ci"]
        assert row.to_dict()["cache_false_hit_rate"] == 1.0 and 0.5 < low < high == 1.0
        events = await run_cache_guard(gw.app.state.sessions)
        # The class's threshold, and the one entry that served all six: its bar just above the
        # closest of them (evaluator.cache_guard.STEP = 0.005).
        assert [(e.task_class, e.action, e.from_threshold, e.k, e.n) for e in events] == [
            ("classify", "raise", 0.80, 6, 6),
            ("classify", "entry-raise", 0.80, 6, 6),
        ]
        served_at = [r.similarity for r in await gw.rows(CacheLookup) if r.match == "semantic"]
        assert len(served_at) == 6
        assert events[1].to_threshold == max(served_at) + 0.005
        raised = events[0].to_threshold
        assert raised is not None and raised > max(sims)
        stored = await gw.rows(CacheGuardEvent)
        assert stored[0].evidence and stored[0].upper is not None and stored[0].upper > 0.01
        await gw.cache.refresh_states()
        gw.cache._states_read_at = utcnow().timestamp()
        gw.answer("not sure")
        reply, headers = await gw.ask(user(paraphrases[0]))
        assert (reply, headers["x-tierwise-cache"]) == ("not sure", "miss")
        # The exact repeat still hits: similarity 1.0 is above any threshold.
        assert (await gw.ask(user(SPAM)))[1]["x-tierwise-cache-match"] == "exact"


def test_the_rule_lowers_slowly_and_switches_off_where_nothing_meets_the_target() -> None:
    clean = [(0.95, False)] * 400
    lowered = guard_rule(0.95, [*clean, *[(0.946, False)] * 400], target=0.01)
    assert lowered is not None and (lowered.action, lowered.to_threshold) == ("lower", 0.945)
    assert guard_rule(0.95, [(0.95, False)] * 30, target=0.01) is None
    # Too few graded hits to switch off on: the threshold goes to the top instead.
    few = guard_rule(0.95, [(1.0, True), (0.99, False)], target=0.01)
    assert few is not None and (few.action, few.to_threshold) == ("raise", 0.995)
    # A wrong exact match among 31 graded hits: no threshold helps.
    off = guard_rule(0.95, [(1.0, True), *[(0.99, False)] * 30], target=0.01)
    assert off is not None and (off.action, off.to_threshold, off.k, off.n) == ("off", None, 1, 31)
    # No lowering into a band without graded hits in it.
    assert guard_rule(0.95, clean, target=0.01) is None


async def test_cache_warm_fills_entries_the_gateway_then_serves(database_url: str) -> None:
    async with cache_on(database_url) as gw:
        result = await warm(
            [
                {"text": SPAM, "label": "spam"},
                {"messages": [{"role": "tool", "content": "x"}], "answer": "no"},
                {"text": "no answer here"},
            ],
            snapshot=gw.app.state.router.snapshot,
            store=gw.cache.store,
            embedder=gw.cache.embedder,
            task_type="classify",
            namespace=namespace_of(None, None),
        )
        assert (result.task_class, result.model, result.stored) == ("classify", "small", 1)
        assert result.skipped == {"tool_results": 1, "no_request_or_answer": 1}
        text, headers = await gw.ask(user(SPAM_AGAIN))
        assert (text, headers["x-tierwise-cache"]) == ("spam", "hit")
        assert gw.wire.hits(OPENAI_PATH) == []
