"""``tierwise report`` carries the semantic cache, on SQLite and PostgreSQL: per class with
lookups in the range its lookups, hits, hit rate, graded and false hits with the 95% Wilson
interval, the threshold and status now, what hits saved and the embedding spend (text and
JSON); and the books count a hit as the call it replaced (in the premium counterfactual) and
the embedding spend as spent. Traffic goes through the real gateway over HTTP (the
embeddings endpoint and the upstreams are the loopback wire server of
``tests/test_cache_embeddings.py``, so the vectors, and with them hits and misses, are fixed);
the two hit verdicts and the guard's state are seeded."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlmodel import select
from typer.testing import CliRunner, Result

from evaluator.models import Grade
from evaluator.stats import wilson
from router.cache import CacheClassState, CacheEntry, CacheLookup
from router.models import RoutingEntry, Sample
from tests.test_cache import SPAM, user
from tests.test_cache_embeddings import ENDPOINT_POLICY, WEATHER, endpoint_cache, nusd
from tests.wire import ANTHROPIC_PATH, Reply, anthropic_message, anthropic_usage
from tierwise.cli import app

POLICY = ENDPOINT_POLICY.replace(
    "cache_threshold = 0.80", "cache_threshold = 0.80\ncache_sample_rate = 1.0"
)
FRENCH = "Translate 'good morning' into French."

# Prices of tests/test_gateway.py's catalog, nano-USD per token (USD per 1M x 1,000).
SMALL_IN, SMALL_OUT = 150, 600
BIG_IN, BIG_OUT = 2_500, 10_000  # the premium model
CLAUDE_IN, CLAUDE_OUT = 3_000, 15_000
GRADE_NUSD = 1_000


async def report(database_url: str, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, app, ["report", *args, "--database-url", database_url]
    )


def body_of(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    return out


async def test_the_report_shows_the_cache_and_books_hits_as_the_calls_they_replaced(
    database_url: str,
) -> None:
    async with endpoint_cache(database_url, POLICY) as gw:
        gw.answer("spam")  # usage: 100 in, 20 out
        assert (await gw.ask(user(SPAM)))[1]["x-tierwise-cache"] == "miss"
        assert (await gw.ask(user(WEATHER)))[1]["x-tierwise-cache-match"] == "semantic"
        assert (await gw.ask(user(SPAM)))[1]["x-tierwise-cache-match"] == "exact"
        gw.answer("bonjour")
        assert (await gw.ask(user(FRENCH)))[1]["x-tierwise-cache"] == "miss"
        gw.wire.enqueue(
            ANTHROPIC_PATH, Reply(body=anthropic_message("summary", usage=anthropic_usage(100, 20)))
        )
        _, headers = await gw.ask(user("Summarise the contract."), model="tierwise/summarize")
        assert headers["x-tierwise-cache-bypass"] == "class_off"
        lookups = await gw.rows(CacheLookup)
        hits = {r.match: r.decision_id for r in lookups if r.outcome == "hit"}
        samples = {s.decision_id: s for s in await gw.rows(Sample)}
        assert sorted(samples) == sorted(hits.values())  # both hits sampled, nothing else
        async with gw.app.state.sessions() as session:
            for match, verdict in (("semantic", "disagree"), ("exact", "agree")):
                s = samples[hits[match]]
                session.add(
                    Grade(
                        decision_id=s.decision_id,
                        task_class="classify",
                        model="cache",
                        reference_model="big",
                        grader="exact",
                        verdict=verdict,
                        parse_status="ok",
                        cost_nusd=GRADE_NUSD,
                        decided_at=s.decided_at,
                    )
                )
            entry = await session.get(RoutingEntry, "classify")
            assert entry is not None and entry.model == "small"
            session.add(
                CacheClassState(
                    task_class="classify",
                    threshold=0.9,
                    model="small",
                    route_version=entry.version,
                )
            )
            # Learnt on a route summarize is no longer on: not in force.
            session.add(
                CacheClassState(
                    task_class="summarize",
                    threshold=0.99,
                    enabled=False,
                    model="small",
                    route_version=entry.version,
                )
            )
            await session.commit()
        await gw.app.state.router.flush()

    body = body_of(await report(database_url, "--json"))
    by_class = {c["task_class"]: c for c in body["cache"]}
    assert sorted(by_class) == ["classify", "summarize"]
    classify = by_class["classify"]
    false_hits, hit_rate = wilson(1, 2), wilson(2, 4)
    assert {k: classify[k] for k in ("lookups", "hits", "misses", "bypasses")} == {
        "lookups": 4,
        "hits": 2,
        "misses": 2,
        "bypasses": 0,
    }
    assert (classify["hit_rate"], classify["hit_rate_ci"]) == (
        0.5,
        [hit_rate.ci_low, hit_rate.ci_high],
    )
    assert (classify["graded_hits"], classify["false_hits"]) == (2, 1)
    assert classify["false_hit_rate"] == 0.5
    assert classify["false_hit_rate_ci"] == [false_hits.ci_low, false_hits.ci_high]
    # Each hit replaced the first call (100 in, 20 out) on small.
    replaced_on_small = 100 * SMALL_IN + 20 * SMALL_OUT
    assert classify["saved_nusd"] == 2 * replaced_on_small == 54_000
    assert classify["saved_usd"] == 0.000054
    # SPAM 7 tokens, WEATHER 11, the exact repeat none, FRENCH 5.
    assert classify["embedding_nusd"] == nusd(7 + 11 + 5) == 460
    assert (classify["threshold"], classify["threshold_source"]) == (0.9, "guard")
    assert classify["cache_status"] == "on" and classify["state_updated_at"] is not None
    summarize = by_class["summarize"]
    assert (summarize["lookups"], summarize["bypasses"], summarize["hit_rate"]) == (1, 1, None)
    assert summarize["false_hit_rate_ci"] is None and summarize["embedding_nusd"] == 0
    assert (summarize["threshold"], summarize["threshold_source"]) == (0.80, "policy")
    assert summarize["cache_status"] == "off: policy"

    books = body["books"]
    serving = 2 * replaced_on_small + 100 * CLAUDE_IN + 20 * CLAUDE_OUT
    assert books["serving_nusd"] == serving == 654_000
    assert (books["embedding_nusd"], books["unpriced_embeddings"]) == (460, 0)
    assert books["grading_nusd"] == 2 * GRADE_NUSD
    assert books["total_nusd"] == serving + 460 + 2 * GRADE_NUSD
    # Everything on the premium model: the three calls made and the two the hits replaced.
    assert (books["cache_hits"], books["unreadable_hits"]) == (2, 0)
    assert books["premium_nusd"] == 5 * (100 * BIG_IN + 20 * BIG_OUT) == 2_250_000
    assert books["savings_nusd"] == 2_250_000 - 654_000 - 460 - 2_000

    text = await report(database_url)
    assert text.exit_code == 0, text.output
    assert "semantic cache" in text.output
    row = next(
        line
        for line in text.output.splitlines()
        if line.lstrip("│ ").startswith("classify") and "guard" in line
    )
    for cell in ("4", "50.0%", "0.900 (guard)", "$0.000054", "$0.00000046"):
        assert cell in row, (cell, row)
    assert "off: policy" in text.output
    assert "embedding:" in text.output

    # A range without cache activity: no cache section, and the books without it.
    empty = await report(database_url, "--until", "2020-01-01")
    assert empty.exit_code == 0 and "semantic cache" not in empty.output
    assert "embedding:" not in empty.output
    old = body_of(await report(database_url, "--until", "2020-01-01", "--json"))
    assert old["cache"] == [] and old["books"]["embedding_nusd"] == 0


async def test_a_hit_whose_entry_is_gone_is_counted_not_priced_as_nothing(
    database_url: str,
) -> None:
    async with endpoint_cache(database_url, POLICY) as gw:
        gw.answer("spam")
        await gw.ask(user(SPAM))
        assert (await gw.ask(user(SPAM)))[1]["x-tierwise-cache"] == "hit"
        await gw.rows(CacheLookup)
        async with gw.app.state.sessions() as session:
            for e in (await session.exec(select(CacheEntry))).all():
                await session.delete(e)
            await session.commit()
    books = body_of(await report(database_url, "--json"))["books"]
    assert (books["cache_hits"], books["unreadable_hits"]) == (1, 1)
    assert books["premium_nusd"] == 100 * BIG_IN + 20 * BIG_OUT
    text = await report(database_url)
    assert "(1 cache hits without a readable replaced call)" in text.output
