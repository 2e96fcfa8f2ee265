"""The gateway, driven by the official ``openai`` SDK over real HTTP, against loopback upstreams
that speak OpenAI's and Anthropic's wire formats (``tests/wire.py``). Every call's decision and
outcome are read back from the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from pydantic import SecretStr
from sqlmodel import select

from evaluator.models import Grade
from evaluator.service import Evaluator
from router.db import make_engine, session_factory
from router.gateway import Gateway as GatewayCore
from router.gateway import parse_call
from router.keys import create_key
from router.models import Decision, Outcome, Sample
from router.money import usd
from router.policy import parse_policy
from router.providers import OpenAIProvider
from router.service import Router
from tests.conftest import apply, make_settings
from tests.serving import served
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Event,
    Reply,
    StreamedCall,
    WireServer,
    anthropic_message,
    anthropic_stream,
    anthropic_stream_error,
    anthropic_usage,
    error_reply,
    openai_chat,
    openai_stream,
    openai_stream_error,
    openai_usage,
)
from tierwise.app import create_app

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

POLICY = """
name = "gateway-test"
default_tier = "standard"
premium_model = "big"
ladder = ["small", "big"]

[tier_models]
trivial = "small"
standard = "small"
complex = "big"
critical = "claude"

[[models]]
name = "small"
provider = "openai"
api_model = "small-2024-07-18"
input_usd_per_mtok = 0.15
cached_input_usd_per_mtok = 0.075
output_usd_per_mtok = 0.60

[[models]]
name = "big"
provider = "openai"
input_usd_per_mtok = 2.50
cached_input_usd_per_mtok = 1.25
output_usd_per_mtok = 10.00

[[models]]
name = "other"
provider = "openai"
input_usd_per_mtok = 1.00
output_usd_per_mtok = 1.00

[[models]]
name = "claude"
provider = "anthropic"
api_model = "claude-x-20241022"
input_usd_per_mtok = 3.00
cached_input_usd_per_mtok = 0.30
cache_write_usd_per_mtok = 3.75
output_usd_per_mtok = 15.00

[fallbacks]
small = ["other"]
claude = ["small"]

[[rules]]
task_types = ["classify"]
tier = "trivial"

[[rules]]
task_types = ["code_generation"]
tier = "complex"

[[rules]]
task_types = ["summarize"]
tier = "critical"

[defaults]
sample_rate = 1.0
reference_model = "big"
"""

HELLO: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Is this spam? 'You won a prize!'"}
]


@dataclass
class Gateway:
    url: str
    wire: WireServer
    router: Router
    client: openai.AsyncOpenAI
    database_url: str
    evaluator: Evaluator
    core: GatewayCore

    async def rows(self) -> tuple[list[Decision], list[Outcome], list[Sample]]:
        """Every decision, outcome and sample, once the batch writer has written them."""
        await self.router.flush()
        engine = make_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                decisions = list((await session.exec(select(Decision))).all())
                outcomes = list((await session.exec(select(Outcome))).all())
                samples = list((await session.exec(select(Sample))).all())
        finally:
            await engine.dispose()
        return decisions, outcomes, samples


@asynccontextmanager
async def gateway_on(database_url: str, **overrides: object) -> AsyncIterator[Gateway]:
    engine = make_engine(database_url)
    await apply(session_factory(engine), parse_policy(POLICY))
    await engine.dispose()
    with WireServer() as wire:
        settings = make_settings(
            database_url,
            openai_api_key=SecretStr("sk-upstream"),
            openai_base_url=wire.openai_base_url,
            anthropic_api_key=SecretStr("sk-ant-upstream"),
            anthropic_base_url=wire.anthropic_base_url,
            **overrides,
        )
        app = create_app(settings)
        async with served(app) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="caller-key", max_retries=0)
            try:
                yield Gateway(
                    url,
                    wire,
                    app.state.router,
                    client,
                    database_url,
                    app.state.evaluator,
                    app.state.gateway,
                )
            finally:
                await client.close()


@pytest.fixture
async def gw(database_url: str) -> AsyncIterator[Gateway]:
    async with gateway_on(database_url) as gateway:
        yield gateway


async def test_a_routed_call_goes_to_the_tables_model_and_is_recorded_once(gw: Gateway) -> None:
    usage = openai_usage(2006, 300, cached=1920)
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("spam", usage=usage, model="small-x")))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO, temperature=0.2, seed=7
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "spam"
    sent = gw.wire.hits(OPENAI_PATH)[0].body
    # The catalog's API id goes upstream; every other parameter passes through as sent.
    assert sent == {
        "model": "small-2024-07-18",
        "messages": HELLO,
        "temperature": 0.2,
        "seed": 7,
    }
    headers = raw.headers
    assert headers["x-tierwise-task-class"] == "classify"
    assert headers["x-tierwise-model"] == "small"
    assert headers["x-tierwise-tier"] == "trivial"
    assert headers["x-tierwise-sampled"] == "true"
    assert headers["x-tierwise-attempts"] == "1"
    assert float(headers["x-tierwise-overhead-ms"]) >= 0
    assert "x-tierwise-shadow" not in headers
    decisions, outcomes, samples = await gw.rows()
    assert [(d.id, d.model, d.shadow) for d in decisions] == [
        (headers["x-tierwise-decision-id"], "small", False)
    ]
    (outcome,) = outcomes
    # Usage counted once: 2006 prompt tokens of which 1920 cached (OpenAI includes them).
    assert (outcome.input_tokens, outcome.cached_input_tokens, outcome.output_tokens) == (
        86,
        1920,
        300,
    )
    assert usd(outcome.cost_nusd) == pytest.approx((86 * 0.15 + 1920 * 0.075 + 300 * 0.60) / 1e6)
    assert outcome.served_model == "small"
    assert outcome.status == "ok"
    assert outcome.attempts is not None
    assert [(a["model"], a["status"]) for a in outcome.attempts] == [("small", "ok")]
    assert outcome.ttft_ms is None
    (sample,) = samples
    assert (sample.model, sample.output_text, sample.input_messages) == ("small", "spam", HELLO)
    assert sample.answer_model is None


async def test_tool_calls_reach_the_caller_and_the_grader(gw: Gateway) -> None:
    body = openai_chat(None, finish_reason="tool_calls")
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "prize"}'},
        }
    ]
    gw.wire.enqueue(OPENAI_PATH, Reply(body=body))
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    ]
    reply = await gw.client.chat.completions.create(
        model="tierwise/classify", messages=HELLO, tools=tools
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "lookup",
        '{"q": "prize"}',
    )
    assert gw.wire.hits(OPENAI_PATH)[0].body["tools"] == tools
    decisions, _, samples = await gw.rows()
    assert decisions[0].has_tool_calls is True
    assert json.loads(samples[0].output_text) == {
        "tool_calls": [{"name": "lookup", "arguments": '{"q": "prize"}'}]
    }


async def test_a_429_with_retry_after_falls_back_and_holds_the_model(gw: Gateway) -> None:
    gw.wire.enqueue(
        OPENAI_PATH,
        error_reply(OPENAI_PATH, 429, headers={"retry-after": "30"}),
        Reply(body=openai_chat("from other", model="other")),
        Reply(body=openai_chat("again other", model="other")),
    )
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO
    )
    assert raw.parse().choices[0].message.content == "from other"
    assert [h.body["model"] for h in gw.wire.hits(OPENAI_PATH)] == ["small-2024-07-18", "other"]
    assert raw.headers["x-tierwise-model"] == "other"
    assert raw.headers["x-tierwise-attempts"] == "2"
    # Retry-After: 30 holds "small": the next call starts at its fallback, without a request.
    second = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO
    )
    assert second.headers["x-tierwise-attempts"] == "1"
    assert [h.body["model"] for h in gw.wire.hits(OPENAI_PATH)][2:] == ["other"]
    _, outcomes, samples = await gw.rows()
    by_id = {o.decision_id: o for o in outcomes}
    first = by_id[raw.headers["x-tierwise-decision-id"]]
    assert first.served_model == "other"
    assert first.attempts is not None
    assert [(a["model"], a["status"], a["upstream_status"]) for a in first.attempts] == [
        ("small", "error", 429),
        ("other", "ok", 200),
    ]
    held = by_id[second.headers["x-tierwise-decision-id"]]
    assert held.attempts is not None
    assert [(a["model"], a["status"]) for a in held.attempts] == [
        ("small", "held"),
        ("other", "ok"),
    ]
    # Cost and quality go to the model that served; the decision keeps the routed one.
    assert {s.model for s in samples} == {"other"}
    assert usd(first.cost_nusd) == pytest.approx((100 * 1.0 + 20 * 1.0) / 1e6)


async def test_a_permanent_upstream_error_is_not_retried_elsewhere(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, error_reply(OPENAI_PATH, 400))
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.client.chat.completions.create(model="tierwise/classify", messages=HELLO)
    assert len(gw.wire.hits(OPENAI_PATH)) == 1
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "upstream_error"
    assert "HTTP 400" in error["message"]
    _, outcomes, samples = await gw.rows()
    assert [(o.status, o.served_model, o.cost_nusd) for o in outcomes] == [("error", "small", None)]
    assert samples == []


async def test_every_model_failing_answers_502_with_each_attempt_recorded(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, error_reply(OPENAI_PATH, 503), error_reply(OPENAI_PATH, 500))
    with pytest.raises(openai.APIStatusError) as caught:
        await gw.client.chat.completions.create(model="tierwise/classify", messages=HELLO)
    assert caught.value.status_code == 502
    _, outcomes, _ = await gw.rows()
    assert outcomes[0].attempts is not None
    assert [(a["model"], a["upstream_status"]) for a in outcomes[0].attempts] == [
        ("small", 503),
        ("other", 500),
    ]


async def test_shadow_mode_serves_the_named_model_and_records_the_routed_one(
    gw: Gateway,
) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("spam", model="big")))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="big",
        messages=HELLO,
        extra_headers={"X-Tierwise-Task-Type": "classify"},
    )
    assert raw.parse().choices[0].message.content == "spam"
    assert gw.wire.hits(OPENAI_PATH)[0].body["model"] == "big"
    assert raw.headers["x-tierwise-shadow"] == "small"
    assert raw.headers["x-tierwise-model"] == "big"
    decisions, outcomes, samples = await gw.rows()
    assert [(d.model, d.shadow, d.task_class) for d in decisions] == [("small", True, "classify")]
    assert outcomes[0].served_model == "big"
    assert usd(outcomes[0].cost_nusd) == pytest.approx((100 * 2.5 + 20 * 10.0) / 1e6)
    # The grader answers with the model tierwise would have chosen, and grades that.
    assert [(s.model, s.answer_model) for s in samples] == [("big", "small")]


async def test_a_shadow_mode_sample_grades_the_routed_models_answer_as_its_evidence(
    database_url: str,
) -> None:
    async with gateway_on(database_url, reference_provider="openai") as gw:
        gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("spam", model="big")))
        await gw.client.chat.completions.create(
            model="big", messages=HELLO, extra_headers={"X-Tierwise-Task-Type": "classify"}
        )
        await gw.router.flush()
        gw.wire.enqueue(
            OPENAI_PATH,
            Reply(body=openai_chat("not spam", model="small", usage=openai_usage(40, 3))),
            Reply(body=openai_chat("Rating: [[2]]", usage=openai_usage(500, 10))),
        )
        run = await gw.evaluator.grade()
        assert run.graded == 1
        answer, judge = (h.body for h in gw.wire.hits(OPENAI_PATH)[1:])
        assert answer["model"] == "small-2024-07-18"
        assert answer["messages"] == HELLO
        assert judge["model"] == "big"
        assert "not spam" in json.dumps(judge["messages"])
        engine = make_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                grades = list((await session.exec(select(Grade))).all())
        finally:
            await engine.dispose()
        assert [(g.model, g.shadow, g.verdict) for g in grades] == [("small", False, "disagree")]
        # The routed model's answer is grading spend: 40 + 3 tokens of small, 500 + 10 of big.
        assert usd(grades[0].cost_nusd) == pytest.approx(
            (40 * 0.15 + 3 * 0.60) / 1e6 + (500 * 2.5 + 10 * 10.0) / 1e6
        )


async def test_a_task_type_no_rule_names_routes_as_the_default_class(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("ok")))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/translate", messages=HELLO
    )
    assert raw.headers["x-tierwise-task-class"] == "default"
    assert raw.headers["x-tierwise-tier"] == "standard"
    assert raw.headers["x-tierwise-model"] == "small"


async def test_the_task_type_may_come_in_a_header(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("ok")))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise",
        messages=HELLO,
        extra_headers={"X-Tierwise-Task-Type": "code_generation"},
    )
    assert raw.headers["x-tierwise-task-class"] == "code_generation"
    assert raw.headers["x-tierwise-model"] == "big"


@pytest.mark.parametrize(
    ("kwargs", "headers", "status", "param"),
    [
        ({"model": "gpt-9", "messages": HELLO}, {}, 404, "model"),
        ({"model": "tierwise", "messages": HELLO}, {}, 400, "model"),
        ({"model": "tierwise/bad type", "messages": HELLO}, {}, 400, "model"),
        ({"model": "tierwise/classify", "messages": []}, {}, 400, "messages"),
        (
            {"model": "tierwise/classify", "messages": [{"role": "user", "content": 5}]},
            {},
            400,
            "messages[0].content",
        ),
        (
            {"model": "tierwise/classify", "messages": HELLO, "stream": "yes"},
            {},
            400,
            "stream",
        ),
        (
            {
                "model": "tierwise/classify",
                "messages": HELLO,
                "tools": [{"type": "function", "function": {"name": "has space"}}],
            },
            {},
            400,
            "tools[0].function.name",
        ),
        (
            {"model": "tierwise/classify", "messages": HELLO},
            {"X-Tierwise-Request-Id": "short"},
            400,
            "x-tierwise-request-id",
        ),
    ],
)
async def test_bad_input_gets_a_clear_openai_error_and_nothing_is_stored(
    gw: Gateway, kwargs: dict[str, Any], headers: dict[str, str], status: int, param: str
) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        resp = await http.post("/v1/chat/completions", json=kwargs, headers=headers)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"] or status == 404
    assert gw.wire.hits() == []
    decisions, outcomes, _ = await gw.rows()
    assert (decisions, outcomes) == ([], [])


async def test_a_body_that_is_not_json_is_refused(gw: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        resp = await http.post("/v1/chat/completions", content=b"{not json")
        deep = await http.post("/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "body"
    assert deep.status_code == 400
    assert deep.json()["error"]["message"] == "the body nests too deeply"


async def test_models_lists_task_types_and_the_catalog(gw: Gateway) -> None:
    listed = [m.id async for m in gw.client.models.list()]
    assert listed == [
        "tierwise",
        "tierwise/classify",
        "tierwise/code_generation",
        "tierwise/summarize",
        "big",
        "claude",
        "other",
        "small",
    ]


async def test_the_sync_client_works_too(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("sync")))
    gw.wire.enqueue(OPENAI_PATH, Reply(events=openai_stream(["str", "eamed"])))

    def call() -> tuple[str | None, str]:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="k", max_retries=0) as client:
            plain = client.chat.completions.create(model="tierwise/classify", messages=HELLO)
            stream = client.chat.completions.create(
                model="tierwise/classify", messages=HELLO, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            return plain.choices[0].message.content, text

    assert await asyncio.to_thread(call) == ("sync", "streamed")


# ---- streaming -------------------------------------------------------------------------------


async def _read(stream: openai.AsyncStream[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_stream_is_relayed_with_usage_counted_once(
    gw: Gateway, include_usage: bool
) -> None:
    usage = openai_usage(2006, 300, cached=1920)
    gw.wire.enqueue(
        OPENAI_PATH, Reply(events=openai_stream(["sp", "am"], usage=usage, model="small"))
    )
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True} if include_usage else openai.omit,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = await _read(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "spam"
    usage_chunks = [c for c in chunks if not c.choices]
    # The usage-only final chunk reaches the caller only when it asked for it.
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage:
        assert usage_chunks[0].usage.prompt_tokens == 2006
    # Usage is always asked of the upstream, whatever the caller asked.
    assert gw.wire.hits(OPENAI_PATH)[0].body["stream_options"] == {"include_usage": True}
    _, outcomes, samples = await gw.rows()
    (outcome,) = outcomes
    assert (outcome.input_tokens, outcome.cached_input_tokens, outcome.output_tokens) == (
        86,
        1920,
        300,
    )
    assert outcome.status == "ok"
    assert outcome.ttft_ms is not None
    assert outcome.ttft_ms > 0
    assert [s.output_text for s in samples] == ["spam"]


async def test_streamed_tool_calls_arrive_intact(gw: Gateway) -> None:
    calls = [
        StreamedCall("call_a", "lookup", ['{"q": ', '"prize"}']),
        StreamedCall("call_b", "flag", ["{}"]),
    ]
    gw.wire.enqueue(OPENAI_PATH, Reply(events=openai_stream([], tool_calls=calls)))
    stream = await gw.client.chat.completions.create(
        model="tierwise/classify", messages=HELLO, stream=True
    )
    chunks = await _read(stream)
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    firsts = [d for d in deltas if d.id is not None]
    assert [(d.index, d.id, d.function.name) for d in firsts] == [
        (0, "call_a", "lookup"),
        (1, "call_b", "flag"),
    ]
    joined: dict[int, str] = {}
    for d in deltas:
        joined[d.index] = joined.get(d.index, "") + (d.function.arguments or "")
    assert joined == {0: '{"q": "prize"}', 1: "{}"}
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert finish == "tool_calls"
    _, _, samples = await gw.rows()
    assert json.loads(samples[0].output_text) == {
        "tool_calls": [
            {"name": "lookup", "arguments": '{"q": "prize"}'},
            {"name": "flag", "arguments": "{}"},
        ]
    }


async def test_an_error_mid_stream_is_relayed_and_recorded_and_never_graded(
    gw: Gateway,
) -> None:
    events = openai_stream(["partial ", "answer"])
    gw.wire.enqueue(
        OPENAI_PATH, Reply(events=[*events[:3], openai_stream_error("upstream fell over")])
    )
    stream = await gw.client.chat.completions.create(
        model="tierwise/classify", messages=HELLO, stream=True
    )
    got: list[str] = []
    with pytest.raises(openai.APIError, match="upstream fell over"):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "partial answer"
    _, outcomes, samples = await gw.rows()
    (outcome,) = outcomes
    assert outcome.status == "error"
    # No usage came: the estimate of what was sent and received is recorded, and says so.
    assert outcome.usage_raw is not None
    assert outcome.usage_raw["estimated"] is True
    assert outcome.output_tokens == 4  # "partial answer": 14 characters
    assert samples == []


async def test_a_stream_whose_body_never_started_is_closed_and_recorded(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(events=openai_stream(["never read"], delay_s=0.5)))
    body = {"model": "tierwise/classify", "messages": HELLO, "stream": True}
    call = gw.core.start(parse_call(body, {}, gw.router.snapshot))
    served, stream = await gw.core.open_stream(call)
    await gw.core.settle(call, served, stream)  # what the response does after a caller left
    await gw.core.settle(call, served, stream)  # and only once
    _, outcomes, _ = await gw.rows()
    assert [(o.status, o.served_model) for o in outcomes] == [("cancelled", "small")]
    assert await asyncio.to_thread(gw.wire.wait_disconnects, 1)


async def test_a_429_before_the_stream_falls_back(gw: Gateway) -> None:
    gw.wire.enqueue(
        OPENAI_PATH,
        error_reply(OPENAI_PATH, 429),
        Reply(events=openai_stream(["from other"], model="other")),
    )
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO, stream=True
    )
    assert raw.headers["x-tierwise-model"] == "other"
    chunks = await _read(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from other"


async def test_a_client_that_leaves_cancels_the_upstream_call(gw: Gateway) -> None:
    events = openai_stream(["first"] + ["more"] * 5, delay_s=0.0)
    slow = [events[0], events[1], *(Event(e.data, e.event, 2.0) for e in events[2:])]
    gw.wire.enqueue(OPENAI_PATH, Reply(events=slow))
    stream = await gw.client.chat.completions.create(
        model="tierwise/classify", messages=HELLO, stream=True
    )
    seen = ""
    async for chunk in stream:
        seen += chunk.choices[0].delta.content or ""
        if seen:
            break
    # The first piece arrived while the upstream was still sending: relayed, not buffered.
    assert seen == "first"
    await stream.close()
    left = await asyncio.to_thread(gw.wire.wait_disconnects, 1)
    assert [h.path for h in left] == [OPENAI_PATH]
    for _ in range(200):
        _, outcomes, _ = await gw.rows()
        if outcomes:
            break
        await asyncio.sleep(0.02)
    (outcome,) = outcomes
    assert outcome.status == "cancelled"
    assert outcome.usage_raw is not None
    assert outcome.usage_raw["estimated"] is True


# ---- an Anthropic upstream, behind the same OpenAI wire format ----------------------------------


async def test_an_anthropic_model_answers_in_openai_shape_with_cache_writes_priced(
    gw: Gateway,
) -> None:
    usage = anthropic_usage(100, 20, cache_read=1920, cache_write=50)
    body = anthropic_message("A short summary.", usage=usage, model="claude-x-20241022")
    gw.wire.enqueue(ANTHROPIC_PATH, Reply(body=body))
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarize: the cat sat on the mat."},
    ]
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/summarize", messages=messages, max_tokens=64
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "A short summary."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    # OpenAI's view counts cache reads and writes inside prompt_tokens.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2070, 20)
    sent = gw.wire.hits(ANTHROPIC_PATH)[0].body
    assert sent["model"] == "claude-x-20241022"
    assert sent["system"] == "Be brief."
    assert sent["max_tokens"] == 64
    _, outcomes, _ = await gw.rows()
    (outcome,) = outcomes
    assert (
        outcome.input_tokens,
        outcome.cached_input_tokens,
        outcome.cache_write_tokens,
        outcome.output_tokens,
    ) == (100, 1920, 50, 20)
    assert usd(outcome.cost_nusd) == pytest.approx(
        (100 * 3.0 + 1920 * 0.30 + 50 * 3.75 + 20 * 15.0) / 1e6
    )


async def test_an_anthropic_stream_counts_cumulative_usage_once(gw: Gateway) -> None:
    usage = anthropic_usage(100, 40, cache_read=1920)
    gw.wire.enqueue(
        ANTHROPIC_PATH, Reply(events=anthropic_stream(["A short ", "summary."], usage=usage))
    )
    stream = await gw.client.chat.completions.create(
        model="tierwise/summarize",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = await _read(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "A short summary."
    (last,) = [c for c in chunks if not c.choices]
    assert last.usage is not None
    assert last.usage.completion_tokens == 40
    _, outcomes, samples = await gw.rows()
    (outcome,) = outcomes
    assert (outcome.input_tokens, outcome.cached_input_tokens, outcome.output_tokens) == (
        100,
        1920,
        40,
    )
    assert [s.output_text for s in samples] == ["A short summary."]


async def test_an_anthropic_overload_mid_stream_is_an_error_outcome(gw: Gateway) -> None:
    events = anthropic_stream(["partial"])
    gw.wire.enqueue(
        ANTHROPIC_PATH, Reply(events=[*events[:4], anthropic_stream_error("Overloaded")])
    )
    stream = await gw.client.chat.completions.create(
        model="tierwise/summarize", messages=HELLO, stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        await _read(stream)
    _, outcomes, samples = await gw.rows()
    assert [o.status for o in outcomes] == ["error"]
    assert samples == []


async def test_a_fallback_crosses_providers(gw: Gateway) -> None:
    gw.wire.enqueue(ANTHROPIC_PATH, error_reply(ANTHROPIC_PATH, 529))
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("from small", model="small")))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/summarize", messages=HELLO
    )
    assert raw.parse().choices[0].message.content == "from small"
    assert raw.headers["x-tierwise-model"] == "small"
    _, outcomes, _ = await gw.rows()
    assert outcomes[0].attempts is not None
    assert [(a["model"], a["upstream_status"]) for a in outcomes[0].attempts] == [
        ("claude", 529),
        ("small", 200),
    ]


# ---- callers -------------------------------------------------------------------------------------


async def test_with_keys_the_gateway_needs_one_with_route_and_records_its_caller(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    async with session_factory(engine)() as session:
        router_key = await create_key(session, "search-team", ["route"])
        reporter = await create_key(session, "reporter", ["outcomes"])
        await session.commit()
    await engine.dispose()
    async with gateway_on(database_url) as gw:
        gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("spam")))
        with pytest.raises(openai.AuthenticationError):
            await gw.client.chat.completions.create(model="tierwise/classify", messages=HELLO)
        async with openai.AsyncOpenAI(
            base_url=f"{gw.url}/v1", api_key=reporter.key, max_retries=0
        ) as wrong_scope:
            with pytest.raises(openai.PermissionDeniedError):
                await wrong_scope.models.list()
        async with openai.AsyncOpenAI(
            base_url=f"{gw.url}/v1", api_key=router_key.key, max_retries=0
        ) as client:
            reply = await client.chat.completions.create(model="tierwise/classify", messages=HELLO)
        assert reply.choices[0].message.content == "spam"
        # The caller's key never goes upstream: tierwise sends its own provider key.
        assert gw.wire.hits(OPENAI_PATH)[0].headers["authorization"] == "Bearer sk-upstream"
        decisions, _, _ = await gw.rows()
        assert [d.caller for d in decisions] == [router_key.info.id]


# ---- what a cold review broke, and its kind ------------------------------------------------------


async def test_a_request_the_upstream_cannot_take_is_400_and_stores_nothing(gw: Gateway) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await gw.client.chat.completions.create(
                model="tierwise/summarize", messages=HELLO, n=3, stream=stream
            )
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "n"
    assert gw.wire.hits() == []
    decisions, outcomes, _ = await gw.rows()
    assert (decisions, outcomes) == ([], [])


@pytest.mark.parametrize(
    "bad",
    [
        Reply(body=b"{not json"),
        Reply(body={"error": {"message": "bad"}}),
        Reply(body={"object": "chat.completion", "usage": openai_usage(1, 1)}),
    ],
    ids=["not-json", "error-in-a-200", "no-choices"],
)
async def test_a_200_that_is_not_an_answer_falls_back(gw: Gateway, bad: Reply) -> None:
    gw.wire.enqueue(OPENAI_PATH, bad, Reply(body=openai_chat("from other", model="other")))
    raw = await gw.client.chat.completions.with_raw_response.create(
        model="tierwise/classify", messages=HELLO
    )
    assert raw.parse().choices[0].message.content == "from other"
    _, outcomes, _ = await gw.rows()
    assert outcomes[0].attempts is not None
    assert [(a["model"], a["status"]) for a in outcomes[0].attempts] == [
        ("small", "error"),
        ("other", "ok"),
    ]


@pytest.mark.parametrize(
    "tail",
    [[Event("{garbage")], []],
    ids=["an-event-that-is-not-json", "an-end-without-a-finish-reason"],
)
async def test_a_broken_stream_is_an_error_event_and_never_graded(
    gw: Gateway, tail: list[Event]
) -> None:
    events = openai_stream(["par", "tial"])
    # the role chunk and both pieces, then the tail instead of the finish chunk and [DONE]
    gw.wire.enqueue(OPENAI_PATH, Reply(events=[*events[:3], *tail]))
    stream = await gw.client.chat.completions.create(
        model="tierwise/classify", messages=HELLO, stream=True
    )
    got = ""
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            got += chunk.choices[0].delta.content or ""
    assert got == "partial"
    _, outcomes, samples = await gw.rows()
    assert [o.status for o in outcomes] == ["error"]
    assert samples == []


async def test_rate_limits_longer_than_the_wait_budget_answer_429(database_url: str) -> None:
    async with gateway_on(database_url, provider_timeout_s=2.0) as gw:
        gw.wire.enqueue(
            OPENAI_PATH,
            error_reply(OPENAI_PATH, 429, headers={"retry-after": "30"}),
            error_reply(OPENAI_PATH, 429, headers={"retry-after": "10"}),
        )
        with pytest.raises(openai.RateLimitError) as caught:
            await gw.client.chat.completions.create(model="tierwise/classify", messages=HELLO)
        assert caught.value.response.headers["retry-after"] == "10"
        # The error is about the model last called, not the first of the chain.
        assert caught.value.response.headers["x-tierwise-model"] == "other"
        _, outcomes, _ = await gw.rows()
        assert [(o.status, o.served_model) for o in outcomes] == [("error", "other")]


async def test_a_repeated_request_id_is_refused_before_any_upstream_call(gw: Gateway) -> None:
    gw.wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("once")))
    headers = {"X-Tierwise-Request-Id": "order-1234-a"}
    await gw.client.chat.completions.create(
        model="tierwise/classify", messages=HELLO, extra_headers=headers
    )
    with pytest.raises(openai.ConflictError) as caught:
        await gw.client.chat.completions.create(
            model="tierwise/classify", messages=HELLO, extra_headers=headers
        )
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "x-tierwise-request-id"
    assert len(gw.wire.hits(OPENAI_PATH)) == 1
    decisions, outcomes, _ = await gw.rows()
    assert (len(decisions), len(outcomes)) == (1, 1)


async def test_an_open_stream_holds_its_place_under_the_concurrency_gate() -> None:
    with WireServer() as wire:
        wire.respond(OPENAI_PATH, lambda _hit: Reply(events=openai_stream(["x"])))
        provider = OpenAIProvider(
            api_key=SecretStr("k"), base_url=wire.openai_base_url, concurrency=1, max_retries=0
        )
        try:
            body = {"model": "m", "messages": HELLO}
            first = await provider.open_stream(body)
            second = asyncio.create_task(provider.open_stream(body))
            await asyncio.sleep(0.2)
            assert not second.done()  # the first stream still holds the one place
            await first.aclose()
            await first.aclose()  # idempotent: the place is freed once
            opened = await asyncio.wait_for(second, 5)
            assert [c async for c in opened][-1]["usage"]["prompt_tokens"] == 100
            await opened.aclose()
        finally:
            await provider.aclose()
