"""The semantic cache with an OpenAI-compatible embeddings endpoint as its embedder
(:class:`router.cache.embed.EndpointEmbedder`), through the gateway over real HTTP on SQLite
and PostgreSQL: ``TIERWISE_CACHE=true``, ``TIERWISE_CACHE_EMBEDDER`` a catalog model whose
provider is the loopback OpenAI wire server (``tests/wire.py``), which answers
``POST /v1/embeddings`` with vectors this test chooses per text. So hit or miss is decided by
those vectors (texts a word-vector model would call paraphrases miss, unrelated texts hit),
the spend booked is the reply's ``usage.prompt_tokens`` at the catalog's embedding price, and
an endpoint that fails makes the call bypass the cache, never fail."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from pydantic import SecretStr

from router.cache import CacheEntry, CacheLookup
from router.db import make_engine, session_factory
from router.models import Outcome
from router.policy import parse_policy
from tests.conftest import apply, make_settings
from tests.serving import served
from tests.test_cache import CACHE_POLICY, SPAM, CacheGateway, user
from tests.wire import (
    EMBEDDINGS_PATH,
    OPENAI_PATH,
    Hit,
    Reply,
    Responder,
    WireServer,
    openai_embeddings,
    openai_error,
)
from tierwise.app import create_app

EMBEDDER = "embed-small"
"""The catalog name of the embedding model; its API id is :data:`EMBEDDER_API_ID`."""
EMBEDDER_API_ID = "text-embedding-3-small"
EMBEDDING_PRICE = 0.02
"""USD per 1M tokens (``embedding_input_usd_per_mtok``; its input price is 1.00)."""

ENDPOINT_POLICY = (
    CACHE_POLICY
    + f"""
[[models]]
name = "{EMBEDDER}"
provider = "openai"
api_model = "{EMBEDDER_API_ID}"
input_usd_per_mtok = 1.00
output_usd_per_mtok = 0.0
embedding_input_usd_per_mtok = {EMBEDDING_PRICE}
"""
)

SPAM_AGAIN = "is this spam: 'you won a prize'"
"""A paraphrase of :data:`SPAM` in words (as the stage sends it: whitespace collapsed)."""
WEATHER = "What is the weather in Paris today?"
"""Nothing like :data:`SPAM` in words; the server puts it at cosine 0.9 from it."""

VECTORS: dict[str, tuple[list[float], int]] = {
    # text -> (the vector the server returns, usage.prompt_tokens)
    SPAM: ([1.0, 0.0, 0.0, 0.0], 7),
    WEATHER: ([0.9, math.sqrt(1 - 0.81), 0.0, 0.0], 11),
    # A paraphrase of SPAM in words, orthogonal to it here.
    SPAM_AGAIN: ([0.0, 0.0, 1.0, 0.0], 13),
    "Translate 'good morning' into French.": ([0.0, 0.0, 0.0, 1.0], 5),
}


def embeddings_server(vectors: Mapping[str, tuple[Sequence[float], int]]) -> Responder:
    """A responder for :data:`EMBEDDINGS_PATH`: each input's vector, the tokens summed."""

    def respond(hit: Hit) -> Reply:
        texts = list(hit.body["input"])
        return Reply(
            body=openai_embeddings(
                [vectors[t][0] for t in texts],
                model=hit.body["model"],
                prompt_tokens=sum(vectors[t][1] for t in texts),
            )
        )

    return respond


@asynccontextmanager
async def endpoint_cache(
    database_url: str, policy: str = ENDPOINT_POLICY
) -> AsyncIterator[CacheGateway]:
    """The app with the cache on and the embeddings endpoint as its embedder (4 dimensions),
    every upstream the loopback wire server, whose embeddings path answers :data:`VECTORS`."""
    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(policy))
    await engine.dispose()
    with WireServer() as wire:
        wire.respond(EMBEDDINGS_PATH, embeddings_server(VECTORS))
        settings = make_settings(
            database_url,
            openai_api_key=SecretStr("sk-upstream"),
            openai_base_url=wire.openai_base_url,
            anthropic_api_key=SecretStr("sk-ant-upstream"),
            anthropic_base_url=wire.anthropic_base_url,
            cache=True,
            cache_embedder=EMBEDDER,
            cache_embedding_dim=4,
        )
        app = create_app(settings)
        async with served(app) as url:
            yield CacheGateway(url, wire, app, database_url)


def nusd(tokens: int) -> int:
    """``tokens`` at :data:`EMBEDDING_PRICE`, nano-USD (0.02 USD per 1M = 20 nano-USD a token)."""
    return tokens * 20


async def test_the_endpoints_vectors_decide_hits_and_its_spend_is_booked(
    database_url: str,
) -> None:
    assert nusd(1) == round(EMBEDDING_PRICE * 1e9 / 1e6)
    async with endpoint_cache(database_url) as gw:
        gw.answer("spam")
        text, headers = await gw.ask(user(SPAM))
        assert (text, headers["x-tierwise-cache"]) == ("spam", "miss")
        # The embeddings call went to the endpoint with the catalog's API id and the turn.
        [first] = gw.wire.hits(EMBEDDINGS_PATH)
        assert first.body == {"model": EMBEDDER_API_ID, "input": [SPAM]}
        assert first.headers["authorization"] == "Bearer sk-upstream"
        # Unrelated in words, at cosine 0.9 by the server's vectors: a semantic hit.
        text, headers = await gw.ask(user(WEATHER))
        assert (text, headers["x-tierwise-cache"]) == ("spam", "hit")
        assert headers["x-tierwise-cache-match"] == "semantic"
        assert headers["x-tierwise-cache-similarity"] == "0.9000"
        # A paraphrase in words, orthogonal by the server's vectors: a miss.
        gw.answer("still spam")
        text, headers = await gw.ask(user(SPAM_AGAIN))
        assert (text, headers["x-tierwise-cache"]) == ("still spam", "miss")
        assert headers["x-tierwise-cache-similarity"] == "0.0000"
        # The exact repeat needs no embedding.
        text, headers = await gw.ask(user(SPAM))
        assert (text, headers["x-tierwise-cache-match"]) == ("spam", "exact")
        assert len(gw.wire.hits(EMBEDDINGS_PATH)) == 3
        assert len(gw.wire.hits(OPENAI_PATH)) == 2
        lookups = sorted(await gw.rows(CacheLookup), key=lambda r: r.created_at)
        assert [(r.outcome, r.match, r.embedding_tokens, r.embedding_nusd) for r in lookups] == [
            ("miss", None, 7, nusd(7)),
            ("hit", "semantic", 11, nusd(11)),
            ("miss", None, 13, nusd(13)),
            ("hit", "exact", 0, 0),
        ]
        assert lookups[1].similarity is not None and abs(lookups[1].similarity - 0.9) < 1e-6
        entries = await gw.rows(CacheEntry)
        assert sorted((e.query_text, e.embedder, e.dim) for e in entries) == [
            (SPAM, EMBEDDER, 4),
            (SPAM_AGAIN, EMBEDDER, 4),
        ]
        stored = {e.query_text: [float(x) for x in e.embedding] for e in entries}
        assert stored[SPAM] == [1.0, 0.0, 0.0, 0.0]
        assert stored[SPAM_AGAIN] == [0.0, 0.0, 1.0, 0.0]


FAILURES = [
    ("a 500", Reply(500, openai_error(500, "embeddings are down"))),
    ("a 200 whose items have no vector", Reply(body={"data": [{"index": 0}], "usage": {}})),
    (
        "a 200 of the wrong dimension",
        Reply(body=openai_embeddings([[1.0, 0.0]], model=EMBEDDER_API_ID, prompt_tokens=3)),
    ),
    ("a 200 that is not JSON", Reply(body=b"<html>bad gateway</html>")),
]


async def test_a_failing_embeddings_endpoint_bypasses_the_cache_not_the_call(
    database_url: str,
) -> None:
    async with endpoint_cache(database_url) as gw:
        for n, (what, reply) in enumerate(FAILURES, 1):
            gw.wire.enqueue(EMBEDDINGS_PATH, reply)
            gw.answer(f"answer {n}")
            text, headers = await gw.ask(user(SPAM))
            assert (what, text, headers["x-tierwise-cache"]) == (what, f"answer {n}", "bypass")
            assert headers["x-tierwise-cache-bypass"] == "embedding_failed"
        # One embeddings call each (the gateway's SDK does not retry), every call answered
        # upstream, nothing cached from a call whose lookup failed.
        assert len(gw.wire.hits(EMBEDDINGS_PATH)) == len(FAILURES)
        assert len(gw.wire.hits(OPENAI_PATH)) == len(FAILURES)
        assert gw.cache.bypassed == {"embedding_failed": len(FAILURES)}
        assert await gw.rows(CacheEntry) == []
        lookups = await gw.rows(CacheLookup)
        assert [(r.outcome, r.reason, r.embedding_nusd) for r in lookups] == [
            ("bypass", "embedding_failed", 0)
        ] * len(FAILURES)
        outcomes = await gw.rows(Outcome)
        assert sorted((o.status, o.served_model) for o in outcomes) == [("ok", "small")] * len(
            FAILURES
        )
        # The endpoint back: the next call is looked up (a miss) and cached again.
        gw.answer("spam")
        text, headers = await gw.ask(user(SPAM))
        assert (text, headers["x-tierwise-cache"]) == ("spam", "miss")
        assert [e.query_text for e in await gw.rows(CacheEntry)] == [SPAM]


async def test_a_free_embedding_price_is_booked_as_free_not_at_the_input_price(
    database_url: str,
) -> None:
    policy = ENDPOINT_POLICY.replace(
        f"embedding_input_usd_per_mtok = {EMBEDDING_PRICE}", "embedding_input_usd_per_mtok = 0"
    )
    async with endpoint_cache(database_url, policy) as gw:
        gw.answer("spam")
        await gw.ask(user(SPAM))
        [lookup] = await gw.rows(CacheLookup)
        assert (lookup.embedding_tokens, lookup.embedding_nusd) == (7, 0)
    # Without an embedding price the model's input price (1.00 USD per 1M) applies.
    policy = ENDPOINT_POLICY.replace(f"embedding_input_usd_per_mtok = {EMBEDDING_PRICE}\n", "")
    async with endpoint_cache(database_url, policy) as gw:
        gw.answer("spam")
        await gw.ask(user(WEATHER))
        lookups = [r for r in await gw.rows(CacheLookup) if r.embedding_tokens == 11]
        assert [r.embedding_nusd for r in lookups] == [11 * 1_000]
