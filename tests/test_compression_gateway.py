"""The compression stage in the gateway, driven by the official ``openai`` SDK over real HTTP
against the loopback upstream (``tests/wire.py``): the compressed body is what reaches the
upstream, the sample keeps what the caller sent, the books and probes reach the database
(SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from pydantic import SecretStr
from sqlmodel import select

from evaluator.compression import grade_probes
from evaluator.service import provider_env
from evaluator.stats import wilson
from router.compression import compress_messages
from router.compression.models import CompressionDay, CompressionProbe
from router.compression.store import CompressionStore
from router.db import make_engine, session_factory
from router.models import Sample
from router.policy import parse_policy
from router.providers import OpenAIProvider
from router.service import Router
from tests.conftest import apply, make_settings
from tests.serving import served
from tests.test_gateway import POLICY
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Reply,
    WireServer,
    anthropic_message,
    openai_chat,
    openai_stream,
)
from tierwise.app import create_app

DATASETS = Path(__file__).resolve().parent.parent / "datasets"

COMPRESSION_POLICY = (
    POLICY
    + """
[[rules]]
task_types = ["qa"]
tier = "standard"

[[rules]]
task_types = ["extract_field"]
tier = "standard"

[[classes]]
match = "qa"
grader = "exact"
compression = ["redundancy", "query"]
compression_ratio = 0.5
compression_min_tokens = 0
compression_probe_rate = 1.0

[[classes]]
match = "extract_field"
compression = ["structural"]
compression_ratio = 0.3
compression_min_tokens = 0

[[classes]]
match = "summarize"
compression = ["query"]
compression_min_tokens = 0
"""
)


def _rows(count: int) -> list[dict[str, Any]]:
    rows = []
    with (DATASETS / "lost_in_the_middle_nq.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == count:
                break
    return rows


ROWS = _rows(20)
SYSTEM = "Answer from the documents only."


def qa_messages() -> list[dict[str, Any]]:
    """A lost-in-the-middle prompt: 20 documents, the gold one in the middle."""
    gold = ROWS[0]
    docs = [r["gold"] for r in ROWS[1:20]]
    docs.insert(9, gold["gold"])
    results = "\n".join(
        f"Document [{i + 1}](Title: {d['title']}) {d['text']}" for i, d in enumerate(docs)
    )
    prompt = (
        "Write a high-quality answer for the given question using only the provided search "
        f"results.\n\n{results}\n\nQuestion: {gold['question']}\nAnswer:"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


@dataclass
class Env:
    wire: WireServer
    router: Router
    client: openai.AsyncOpenAI
    store: CompressionStore
    database_url: str
    url: str

    async def table(self, model: Any) -> list[Any]:
        await self.router.flush()
        await self.store.sync()
        engine = make_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                return list((await session.exec(select(model))).all())
        finally:
            await engine.dispose()


@asynccontextmanager
async def compressing_gateway(database_url: str) -> AsyncIterator[Env]:
    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(COMPRESSION_POLICY))
    await engine.dispose()
    with WireServer() as wire:
        settings = make_settings(
            database_url,
            openai_api_key=SecretStr("sk-upstream"),
            openai_base_url=wire.openai_base_url,
            anthropic_api_key=SecretStr("sk-ant-upstream"),
            anthropic_base_url=wire.anthropic_base_url,
        )
        app = create_app(settings)
        async with served(app) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="caller-key", max_retries=0)
            try:
                yield Env(wire, app.state.router, client, app.state.compression, database_url, url)
            finally:
                await client.close()


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Env]:
    async with compressing_gateway(database_url) as gateway:
        yield gateway


async def test_the_compressed_body_reaches_the_upstream(env: Env) -> None:
    messages = qa_messages()
    expected = compress_messages(messages, ["redundancy", "query"], 0.5)
    assert expected.status == "compressed"
    env.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("Wilhelm Conrad Röntgen")))
    raw = await env.client.chat.completions.with_raw_response.create(
        model="tierwise/qa",
        messages=cast(Any, messages),
        temperature=0,
    )
    assert raw.parse().choices[0].message.content == "Wilhelm Conrad Röntgen"
    sent = env.wire.hits(OPENAI_PATH)[0].body
    assert sent == {"model": "small-2024-07-18", "messages": expected.messages, "temperature": 0}
    assert sent["messages"][0] == messages[0]  # the system prompt as sent
    assert sent["messages"][1]["content"].endswith(f"Question: {ROWS[0]['question']}\nAnswer:")
    assert "Wilhelm Conrad Röntgen" in sent["messages"][1]["content"]
    assert len(sent["messages"][1]["content"]) < len(messages[1]["content"]) * 0.6
    assert raw.headers["x-tierwise-compression"] == (
        f"compressed {expected.tokens}/{expected.original_tokens} tokens at 0.5"
    )
    (sample,) = await env.table(Sample)
    assert sample.input_messages == messages  # graded on what the caller sent
    (day,) = await env.table(CompressionDay)
    saved = expected.original_tokens - expected.tokens
    assert (day.task_class, day.model, day.calls, day.compressed, day.guarded) == (
        "qa",
        "small",
        1,
        1,
        0,
    )
    assert (day.tokens_before, day.tokens_after) == (expected.original_tokens, expected.tokens)
    assert day.saved_nusd == saved * 150  # 0.15 USD per 1M input tokens = 150 nano-USD a token
    (probe,) = await env.table(CompressionProbe)  # probe rate 1.0
    assert (probe.decision_id, probe.level, probe.ratio, probe.trial, probe.status) == (
        raw.headers["x-tierwise-decision-id"],
        0,
        0.5,
        False,
        "queued",
    )
    assert probe.input_messages == messages
    assert probe.output_text == "Wilhelm Conrad Röntgen"
    assert probe.pipeline == ["redundancy", "query"]


async def test_a_stream_is_compressed_too(env: Env) -> None:
    messages = qa_messages()
    expected = compress_messages(messages, ["redundancy", "query"], 0.5)
    env.wire.enqueue(OPENAI_PATH, Reply(events=openai_stream(["Wilhelm ", "Röntgen"])))
    stream = await env.client.chat.completions.create(
        model="tierwise/qa",
        messages=cast(Any, messages),
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Wilhelm Röntgen"
    assert env.wire.hits(OPENAI_PATH)[0].body["messages"] == expected.messages


async def test_an_extraction_request_that_would_drop_a_named_field_goes_uncompressed(
    env: Env,
) -> None:
    prose = [r["gold"]["text"] for r in ROWS[1:9]]
    holder = "The codename Falcon Crest belongs to the western warehouse."
    context = "\n\n".join([*prose[:4], holder, *prose[4:]])
    messages = [
        {"role": "user", "content": f"Extract it.\n\n{context}\n\nWhich site is 'Falcon Crest'?"}
    ]
    env.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("the western warehouse")))
    raw = await env.client.chat.completions.with_raw_response.create(
        model="tierwise/extract_field",
        messages=cast(Any, messages),
    )
    # extract_field: the guard is on by the class's name; structural at 0.3 would lose the
    # sentence holding the named value, so the request goes as sent.
    assert env.wire.hits(OPENAI_PATH)[0].body["messages"] == messages
    assert raw.headers["x-tierwise-compression"] == (
        "unchanged: extraction guard: compression would drop 'Falcon Crest', which the "
        "question names"
    )
    (day,) = await env.table(CompressionDay)
    assert (day.calls, day.compressed, day.guarded, day.saved_nusd) == (1, 0, 1, 0)
    assert day.tokens_before == day.tokens_after > 0
    assert await env.table(CompressionProbe) == []


async def test_a_critical_class_and_a_class_without_compressors_are_sent_as_they_came(
    env: Env,
) -> None:
    messages = qa_messages()
    env.wire.enqueue(ANTHROPIC_PATH, Reply(body=anthropic_message("a summary")))
    critical = await env.client.chat.completions.with_raw_response.create(
        model="tierwise/summarize",  # critical tier; the class names a compressor
        messages=cast(Any, messages),
    )
    assert critical.headers["x-tierwise-compression"] == "unchanged: critical tier"
    sent = env.wire.hits(ANTHROPIC_PATH)[0].body
    assert sent["system"] == SYSTEM
    assert sent["messages"] == [{"role": "user", "content": messages[1]["content"]}]
    env.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("spam")))
    plain = await env.client.chat.completions.with_raw_response.create(
        model="tierwise/classify",  # no compressors
        messages=cast(Any, messages),
    )
    assert "x-tierwise-compression" not in plain.headers
    assert env.wire.hits(OPENAI_PATH)[0].body["messages"] == messages
    assert await env.table(CompressionDay) == []


async def test_the_books_show_what_compression_saved_and_what_the_guard_spent(env: Env) -> None:
    messages = qa_messages()
    expected = compress_messages(messages, ["redundancy", "query"], 0.5)
    env.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("Wilhelm Conrad Röntgen")))
    await env.client.chat.completions.create(model="tierwise/qa", messages=cast(Any, messages))
    assert len(await env.table(CompressionProbe)) == 1
    # The guard: the served model answers the uncompressed messages; the class's grader (exact)
    # compares that answer with the compressed one.
    env.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("Max Planck")))
    provider = OpenAIProvider(
        api_key=SecretStr("sk-test"), base_url=env.wire.openai_base_url, max_retries=0
    )
    engine = make_engine(env.database_url)
    try:
        graded = await grade_probes(session_factory(engine), provider_env(lambda m: provider))
    finally:
        await engine.dispose()
    assert (graded.graded, graded.cost_nusd) == (1, (100 * 150 + 20 * 600))
    async with httpx.AsyncClient(base_url=env.url) as http:
        reply = await http.get("/v1/compression", params={"since": "2026-01-01"})
        bad = await http.get("/v1/compression", params={"since": "yesterday"})
    assert reply.status_code == 200
    (qa,) = reply.json()["classes"]
    saved = expected.original_tokens - expected.tokens
    assert qa == {
        "task_class": "qa",
        "level": 0,
        "level_name": "policy",
        "ratio": 0.5,
        "calls": 1,
        "compressed": 1,
        "guarded": 0,
        "tokens_before": expected.original_tokens,
        "tokens_after": expected.tokens,
        "tokens_saved": saved,
        "saved_nusd": saved * 150,
        "saved_usd": saved * 150 / 1e9,
        "probes_graded": 1,
        "disagree": 1,
        "disagreement_rate": 1.0,
        "disagreement_ci": [wilson(1, 1).ci_low, wilson(1, 1).ci_high],
        "guard_spend_nusd": (100 * 150 + 20 * 600),
        "guard_spend_usd": (100 * 150 + 20 * 600) / 1e9,
    }
    assert reply.json()["events"] == []
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "since"
