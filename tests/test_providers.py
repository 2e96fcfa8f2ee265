"""Provider adapters through the real OpenAI and Anthropic SDKs against a loopback wire server.

Nothing of tierwise or the SDKs is patched: each test scripts HTTP responses on
:class:`tests.wire.WireServer` and checks what the adapter returns or raises and what reached
the server (arrival times are taken on the server). The subject is usage and cost, retry hints
and the wait budget, and judge replies without a verdict (docs/field-cases.md).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import load_judge_prompts
from evaluator.graders import GRADERS, GraderEnv, SampleView
from evaluator.grading import grade_pending
from evaluator.models import Grade
from router.db import utcnow
from router.errors import InvalidInput
from router.models import Decision, Sample
from router.policy import ClassSettings, ModelPrice, builtin_policy_path, parse_policy
from router.pricing import cost_usd
from router.providers import (
    AnthropicProvider,
    ChatRequest,
    Deferred,
    OpenAIProvider,
    Provider,
    ProviderError,
    provider_from_settings,
    retry_after_s,
)
from router.providers import anthropic as anthropic_adapter
from router.providers import openai as openai_adapter
from router.table import apply_policy
from tests.conftest import make_settings, running_service
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Hit,
    Reply,
    WireServer,
    anthropic_message,
    anthropic_usage,
    error_reply,
    openai_chat,
    openai_usage,
)

APIS = ("openai", "anthropic")
KEY = "sk-wire-test"


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


@dataclass
class Api:
    """One provider API under test: its path on the wire and how to build its adapter."""

    name: str
    wire: WireServer
    made: list[Provider]

    @property
    def path(self) -> str:
        return OPENAI_PATH if self.name == "openai" else ANTHROPIC_PATH

    def provider(self, **kw: Any) -> Provider:
        kw.setdefault("budget_s", 60.0)
        provider: Provider
        if self.name == "openai":
            provider = OpenAIProvider(
                api_key=SecretStr(KEY), base_url=self.wire.openai_base_url, **kw
            )
        else:
            provider = AnthropicProvider(
                api_key=SecretStr(KEY), base_url=self.wire.anthropic_base_url, **kw
            )
        self.made.append(provider)
        return provider

    def ok(self, text: str | None, *, usage: dict[str, Any] | None = None) -> Reply:
        if self.name == "openai":
            return Reply(body=openai_chat(text, usage=usage))
        return Reply(body=anthropic_message(text, usage=usage))

    def truncated(self, text: str) -> Reply:
        if self.name == "openai":
            return Reply(body=openai_chat(text, finish_reason="length"))
        return Reply(body=anthropic_message(text, stop_reason="max_tokens"))

    def refusal(self, text: str | None) -> Reply:
        """A refusal; with no text, OpenAI's is a content filter stop with no content."""
        if self.name == "openai":
            if text is None:
                return Reply(body=openai_chat(None, finish_reason="content_filter"))
            return Reply(body=openai_chat(None, refusal=text))
        return Reply(body=anthropic_message(text, stop_reason="refusal"))

    def error(self, status: int, **headers: str) -> Reply:
        return error_reply(
            self.path, status, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )

    def hits(self) -> list[Hit]:
        return self.wire.hits(self.path)


@pytest.fixture(params=APIS)
async def api(request: pytest.FixtureRequest, wire: WireServer) -> AsyncIterator[Api]:
    made: list[Provider] = []
    yield Api(str(request.param), wire, made)
    for provider in made:
        await provider.aclose()


def ask(model: str = "ref-model", text: str = "hi") -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}], max_tokens=64)


def price(
    name: str, inp: float, out: float, cached: float | None = None, write: float | None = None
) -> ModelPrice:
    return ModelPrice(
        name=name,
        provider="test",
        input_usd_per_mtok=inp,
        output_usd_per_mtok=out,
        cached_input_usd_per_mtok=cached,
        cache_write_usd_per_mtok=write,
    )


# ---- usage and cost: cached and reasoning tokens, null details -------------------------------

U1_PRICE = price("gpt-4o", 2.50, 10.0, cached=1.25)
U2_PRICE = price("o1", 30.0, 180.0)


def u1_usage(api: str) -> dict[str, Any]:
    if api == "openai":
        return openai_usage(2006, 300, cached=1920)
    return anthropic_usage(86, 300, cache_read=1920)  # Anthropic counts the 86 apart


def u2_usage(api: str) -> dict[str, Any]:
    if api == "openai":
        return openai_usage(14746, 1944, reasoning=1360)
    return anthropic_usage(14746, 1944, thinking=1360)


async def test_cached_prompt_tokens_are_billed_once(api: Api) -> None:
    api.wire.enqueue(api.path, api.ok("Rating: [[8]]", usage=u1_usage(api.name)))
    reply = await api.provider().complete(ask())
    assert (reply.usage.input_tokens, reply.usage.cached_input_tokens) == (86, 1920)
    assert reply.usage.output_tokens == 300
    assert reply.usage.total_input_tokens == 2006
    assert cost_usd(reply.usage, U1_PRICE) == pytest.approx(0.005615, abs=1e-12)
    assert (reply.text, reply.finish_reason) == ("Rating: [[8]]", "stop")


async def test_reasoning_tokens_are_inside_output(api: Api) -> None:
    api.wire.enqueue(api.path, api.ok("[[7]]", usage=u2_usage(api.name)))
    reply = await api.provider().complete(ask())
    assert reply.usage.output_tokens == 1944
    assert reply.usage.input_tokens == 14746
    assert cost_usd(reply.usage, U2_PRICE) == pytest.approx(0.7923, abs=1e-12)
    if api.name == "openai":
        assert reply.usage.reasoning_tokens == 1360


@pytest.mark.parametrize("variant", ["null_details", "null_counts"])
async def test_null_details_count_as_zero(api: Api, variant: str) -> None:
    usage: dict[str, Any]
    if api.name == "openai":
        usage = openai_usage(1000, 100, cached=None, reasoning=None)
        if variant == "null_counts":
            usage["prompt_tokens_details"] = {"cached_tokens": None}
            usage["completion_tokens_details"] = {"reasoning_tokens": None}
    else:
        usage = anthropic_usage(1000, 100, cache_read=None, cache_write=None, thinking=None)
        if variant == "null_counts":
            usage["output_tokens_details"] = None
            usage["cache_creation"] = None
    api.wire.enqueue(api.path, api.ok("[[7]]", usage=usage))
    reply = await api.provider().complete(ask())
    u = reply.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (1000, 0, 0)
    assert (u.output_tokens, u.reasoning_tokens) == (100, 0)
    assert cost_usd(u, U1_PRICE) == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)


async def test_anthropic_cache_reads_and_writes_are_billed_on_top(wire: WireServer) -> None:
    api = Api("anthropic", wire, [])
    wire.enqueue(
        ANTHROPIC_PATH,
        api.ok("[[7]]", usage=anthropic_usage(100, 50, cache_read=2000, cache_write=1000)),
    )
    reply = await api.provider().complete(ask())
    await api.made[0].aclose()
    assert reply.usage.total_input_tokens == 3100
    sonnet = price("claude-3-5-sonnet", 3.0, 15.0, cached=0.30, write=3.75)
    assert cost_usd(reply.usage, sonnet) == pytest.approx(0.0054, abs=1e-12)


async def test_request_shapes_on_the_wire(api: Api) -> None:
    api.wire.enqueue(api.path, api.ok("ok"))
    request = ChatRequest(
        model="ref-model",
        system="be a judge",
        messages=[{"role": "user", "content": "rate this"}],
        max_tokens=77,
    )
    await api.provider().complete(request)
    [hit] = api.hits()
    if api.name == "openai":
        assert hit.body["messages"] == [
            {"role": "system", "content": "be a judge"},
            {"role": "user", "content": "rate this"},
        ]
        assert hit.body["max_completion_tokens"] == 77
        assert hit.headers["authorization"] == f"Bearer {KEY}"
    else:
        assert hit.body["system"] == "be a judge"
        assert hit.body["messages"] == [{"role": "user", "content": "rate this"}]
        assert hit.body["max_tokens"] == 77
        assert "temperature" not in hit.body  # API 2026-10-21 rejects sampling parameters
        assert KEY in (hit.headers.get("x-api-key", "") + hit.headers.get("authorization", ""))
    assert hit.body["model"] == "ref-model"


# ---- retry hints and the wait budget ---------------------------------------------------------


async def test_retry_after_ms_4321_waits_at_least_4321_ms(api: Api) -> None:
    api.wire.enqueue(api.path, api.error(429, retry_after_ms="4321"), api.ok("[[8]]"))
    reply = await api.provider().complete(ask())
    first, second = api.hits()
    assert reply.text == "[[8]]"
    assert second.at - first.at >= 4.321
    assert second.headers.get("x-stainless-retry-count") == "1"  # the SDK's own retry


@pytest.mark.parametrize(
    ("status", "header", "value", "wait_s"),
    [
        (429, "retry-after-ms", "321", 0.321),
        (503, "retry-after-ms", "321", 0.321),
        (429, "retry-after", "1", 1.0),
    ],
)
async def test_short_retry_hints_are_slept_by_the_sdk(
    api: Api, status: int, header: str, value: str, wait_s: float
) -> None:
    api.wire.enqueue(
        api.path, Reply(status, api.error(status).body, {header: value}), api.ok("[[8]]")
    )
    await api.provider().complete(ask())
    first, second = api.hits()
    assert second.at - first.at >= wait_s


async def test_retry_after_beyond_budget_defers_without_sleeping(api: Api) -> None:
    api.wire.enqueue(api.path, api.error(429, retry_after="120"))
    provider = api.provider(budget_s=60.0)
    started = time.monotonic()
    with pytest.raises(Deferred) as caught:
        await provider.complete(ask("ref-model"))
    assert time.monotonic() - started < 2.0
    assert caught.value.retry_after_s == 120.0
    assert caught.value.transient
    assert len(api.hits()) == 1
    # The model is on hold: the next call is deferred without knocking again...
    with pytest.raises(Deferred):
        await provider.complete(ask("ref-model"))
    assert len(api.hits()) == 1
    # ...while another model on the same provider is not held.
    api.wire.enqueue(api.path, api.ok("[[8]]"))
    assert (await provider.complete(ask("other-model"))).text == "[[8]]"


async def test_the_budget_counts_every_wait_of_a_call(api: Api) -> None:
    api.wire.enqueue(
        api.path, api.error(429, retry_after_ms="700"), api.error(429, retry_after_ms="700")
    )
    with pytest.raises(Deferred):
        await api.provider(budget_s=1.0, max_retries=5).complete(ask())
    first, second = api.hits()  # slept 0.7 s once; the second 0.7 s would overrun 1 s
    assert second.at - first.at >= 0.7


async def test_retry_after_as_http_date_beyond_budget_defers(api: Api) -> None:
    when = email.utils.formatdate(time.time() + 300, usegmt=True)
    api.wire.enqueue(api.path, api.error(503, retry_after=when))
    with pytest.raises(Deferred) as caught:
        await api.provider(budget_s=60.0).complete(ask())
    assert 290 < caught.value.retry_after_s <= 300
    assert len(api.hits()) == 1


def test_retry_after_parsing() -> None:
    assert retry_after_s({"retry-after-ms": "4321", "retry-after": "9"}) == pytest.approx(4.321)
    assert retry_after_s({"retry-after": "120"}) == 120.0
    assert retry_after_s({"retry-after": "1.5"}) == 1.5
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "-3"}) is None
    assert retry_after_s({"retry-after": "nan"}) is None
    assert retry_after_s({"retry-after": "garbage"}) is None
    assert retry_after_s({}) is None
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after_s({"retry-after": past}) == 0.0


async def test_500_then_200_is_retried_once_by_the_sdk(api: Api) -> None:
    api.wire.enqueue(api.path, api.error(500), api.ok("[[9]]"))
    reply = await api.provider().complete(ask())
    assert reply.text == "[[9]]"
    assert len(api.hits()) == 2


async def test_persistent_500_is_a_transient_provider_error(api: Api) -> None:
    api.wire.enqueue(api.path, *[api.error(500, retry_after_ms="10")] * 3)
    with pytest.raises(ProviderError) as caught:
        await api.provider(max_retries=2).complete(ask())
    assert not isinstance(caught.value, Deferred)
    assert caught.value.transient
    assert len(api.hits()) == 3  # the first try and the SDK's two retries
    assert api.wire.pending(api.path) == 0


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_4xx_is_a_permanent_provider_error(api: Api, status: int) -> None:
    api.wire.enqueue(api.path, api.error(status))
    with pytest.raises(ProviderError) as caught:
        await api.provider().complete(ask())
    assert not caught.value.transient
    assert f"HTTP {status}" in caught.value.message
    assert len(api.hits()) == 1


async def test_timeout_is_transient(api: Api) -> None:
    api.wire.enqueue(api.path, Reply(body=api.ok("late").body, delay_s=1.5))
    with pytest.raises(ProviderError) as caught:
        await api.provider(timeout_s=0.2, max_retries=0).complete(ask())
    assert caught.value.transient
    assert "no reply within 0.2 s" in caught.value.message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("name", APIS)
async def test_connection_refused_is_transient(name: str) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    provider: Provider = (
        OpenAIProvider(api_key=SecretStr(KEY), base_url=f"{url}/v1", max_retries=0)
        if name == "openai"
        else AnthropicProvider(api_key=SecretStr(KEY), base_url=url, max_retries=0)
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())
    finally:
        await provider.aclose()
    assert caught.value.transient


async def test_concurrency_is_bounded_per_provider(api: Api) -> None:
    api.wire.respond(api.path, lambda _hit: Reply(body=api.ok("[[8]]").body, delay_s=0.2))
    provider = api.provider(concurrency=2)
    await asyncio.gather(*(provider.complete(ask()) for _ in range(6)))
    assert len(api.hits()) == 6
    assert api.wire.max_in_flight == 2


# ---- finish reasons and the judge grader: replies without a verdict --------------------------


def test_finish_reason_tables() -> None:
    assert openai_adapter.finish_reason_of("stop", None) == "stop"
    assert openai_adapter.finish_reason_of("length", None) == "length"
    assert openai_adapter.finish_reason_of("content_filter", None) == "refusal"
    assert openai_adapter.finish_reason_of("stop", "I can't help with that") == "refusal"
    assert openai_adapter.finish_reason_of("tool_calls", None) == "other"
    assert anthropic_adapter.finish_reason_of("end_turn") == "stop"
    assert anthropic_adapter.finish_reason_of("stop_sequence") == "stop"
    assert anthropic_adapter.finish_reason_of("max_tokens") == "length"
    assert anthropic_adapter.finish_reason_of("model_context_window_exceeded") == "length"
    assert anthropic_adapter.finish_reason_of("refusal") == "refusal"
    assert anthropic_adapter.finish_reason_of("tool_use") == "other"


def judge_env(provider: Provider) -> GraderEnv:
    return GraderEnv(
        provider_for=lambda _model: provider,
        items={},
        judge_prompts=load_judge_prompts(),
    )


SAMPLE = SampleView(
    "d-1",
    "summarize",
    "gpt-4o-mini",
    [{"role": "user", "content": "Summarise: the cat sat on the mat."}],
    "A cat sat on a mat.",
)


async def judge(api: Api, reply: Reply) -> tuple[str, str, str]:
    api.wire.enqueue(api.path, reply)
    result = await GRADERS["judge_single"].grade(
        SAMPLE, ClassSettings(), "ref-model", judge_env(api.provider())
    )
    return result.verdict, result.parse_status, result.raw_output


async def test_judge_rating_is_a_verdict(api: Api) -> None:
    api.wire.enqueue(
        api.path, api.ok("Concise and faithful. Rating: [[8]]", usage=u1_usage(api.name))
    )
    result = await GRADERS["judge_single"].grade(
        SAMPLE, ClassSettings(), "ref-model", judge_env(api.provider())
    )
    assert (result.verdict, result.parse_status, result.score) == ("agree", "ok", 8.0)
    assert cost_usd(result.usage, U1_PRICE) == pytest.approx(0.005615)
    [hit] = api.hits()
    assert "A cat sat on a mat." in json.dumps(hit.body)  # the MT-Bench template was sent


async def test_judge_that_cannot_evaluate_is_no_verdict(api: Api) -> None:
    verdict, status, raw = await judge(api, api.ok("I cannot evaluate this"))
    assert (verdict, status, raw) == ("refused", "refused", "I cannot evaluate this")


async def test_judge_without_a_rating_is_invalid(api: Api) -> None:
    assert await judge(api, api.ok("The summary is fine.")) == (
        "invalid",
        "no_rating",
        "The summary is fine.",
    )


async def test_judge_cut_off_by_the_token_limit_is_truncated(api: Api) -> None:
    verdict, status, _ = await judge(api, api.truncated("The answer is accurate and [[9"))
    assert (verdict, status) == ("invalid", "truncated")


async def test_judge_refusal_is_refused(api: Api) -> None:
    verdict, status, raw = await judge(api, api.refusal("I'm sorry, but I can't help with that."))
    assert (verdict, status) == ("refused", "refused")
    assert raw == "I'm sorry, but I can't help with that."


async def test_judge_refusal_without_text_is_refused(api: Api) -> None:
    # The finish reason alone carries it: OpenAI content_filter / Anthropic stop_reason refusal.
    assert await judge(api, api.refusal(None)) == ("refused", "refused", "")


async def test_content_filter_is_a_refusal(wire: WireServer) -> None:
    api = Api("openai", wire, [])
    wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("", finish_reason="content_filter")))
    reply = await api.provider().complete(ask())
    await api.made[0].aclose()
    assert reply.finish_reason == "refusal"


# ---- construction from settings -------------------------------------------------------------


async def test_provider_from_settings(wire: WireServer) -> None:
    base = make_settings("sqlite+aiosqlite:///unused.db")
    openai_s = base.model_copy(
        update={
            "reference_provider": "openai",
            "openai_api_key": SecretStr(KEY),
            "openai_base_url": wire.openai_base_url,
            "openai_concurrency": 3,
            "provider_max_retries": 0,
            "grading_budget_s": 5.0,
        }
    )
    provider = provider_from_settings(openai_s)
    assert isinstance(provider, OpenAIProvider)
    assert (provider.concurrency, provider.budget.budget_s) == (3, 5.0)
    wire.enqueue(OPENAI_PATH, error_reply(OPENAI_PATH, 500))
    with pytest.raises(ProviderError):
        await provider.complete(ask())
    assert len(wire.hits(OPENAI_PATH)) == 1  # provider_max_retries=0 reached the SDK
    await provider.aclose()

    anthropic_s = base.model_copy(
        update={
            "reference_provider": "anthropic",
            "anthropic_api_key": SecretStr(KEY),
            "anthropic_base_url": wire.anthropic_base_url,
        }
    )
    provider = provider_from_settings(anthropic_s)
    assert isinstance(provider, AnthropicProvider)
    await provider.aclose()

    for update, field in [
        ({"reference_provider": "anthropic"}, "anthropic_api_key"),
        ({"reference_provider": "openai"}, "openai_api_key"),
        ({"reference_provider": "replay"}, "reference_provider"),
        ({"reference_provider": "gemini"}, "reference_provider"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            provider_from_settings(base.model_copy(update=update))
        assert caught.value.field == field


async def test_app_grades_through_the_configured_provider(
    database_url: str, wire: WireServer
) -> None:
    async with running_service(
        database_url,
        "default",
        reference_provider="anthropic",
        anthropic_api_key=SecretStr(KEY),
        anthropic_base_url=wire.anthropic_base_url,
    ) as svc:
        provider = (await svc.evaluator.load_env()).provider_for("claude-3-5-sonnet")
        assert provider.name == "anthropic"
        wire.enqueue(ANTHROPIC_PATH, Reply(body=anthropic_message("[[8]]")))
        assert (await provider.complete(ask())).text == "[[8]]"
        # The catalog's api_model goes upstream, not the catalog name.
        assert wire.hits(ANTHROPIC_PATH)[0].body["model"] == "claude-3-5-sonnet-20241022"


# ---- the grading job end to end --------------------------------------------------------------

OPENAI_CLASS, ANTHROPIC_CLASS = "judge_openai", "judge_anthropic"
POLICY_OVERRIDE = f"""
[[classes]]
match = "{OPENAI_CLASS}"
reference_model = "gpt-4o"
"""
# Judge replies by a marker in the graded answer (the judge prompt carries the answer).
MARKERS = ("AGREE", "DISAGREE", "REFUSE", "TRUNCATE")
ANTHROPIC_E2E_USAGE = anthropic_usage(86, 300, cache_read=1920, cache_write=1000)
# claude-3-5-sonnet: 86 x 3.00 + 1920 x 0.30 + 1000 x 3.75 + 300 x 15, per million.
ANTHROPIC_E2E_COST = 0.009084
OPENAI_E2E_COST = 0.005615  # cached prompt tokens at gpt-4o


def e2e_responder(api: str) -> Callable[[Hit], Reply]:
    def respond(hit: Hit) -> Reply:
        prompt = json.dumps(hit.body)
        marker = next(m for m in MARKERS if f"ANSWER-{m}-" in prompt)
        text = {
            "AGREE": "Good. Rating: [[8]]",
            "DISAGREE": "Poor. Rating: [[3]]",
            "REFUSE": "I cannot evaluate this",
            "TRUNCATE": "The answer is",
        }[marker]
        if api == "openai":
            finish = "length" if marker == "TRUNCATE" else "stop"
            return Reply(body=openai_chat(text, finish_reason=finish, usage=u1_usage("openai")))
        stop = "max_tokens" if marker == "TRUNCATE" else "end_turn"
        return Reply(body=anthropic_message(text, stop_reason=stop, usage=ANTHROPIC_E2E_USAGE))

    return respond


async def seed(sessions: async_sessionmaker[AsyncSession], rows: list[tuple[str, str]]) -> None:
    """Apply the default policy (+ gpt-4o as reference of the OpenAI class) and queue samples
    ``(decision id, task class)`` whose answer carries the id's marker."""
    body = builtin_policy_path("default").read_text(encoding="utf-8") + POLICY_OVERRIDE
    async with sessions() as session:
        await apply_policy(session, parse_policy(body))
        now = utcnow()
        for decision_id, task_class in rows:
            session.add(
                Decision(
                    id=decision_id,
                    task_type=task_class,
                    task_class=task_class,
                    tier="standard",
                    model="gpt-4o-mini",
                    provider="openai",
                    table_version=1,
                    sampled=True,
                    input_tokens=12,
                    has_tool_calls=False,
                    created_at=now,
                )
            )
        await session.flush()
        for decision_id, task_class in rows:
            session.add(
                Sample(
                    decision_id=decision_id,
                    task_class=task_class,
                    model="gpt-4o-mini",
                    input_messages=[{"role": "user", "content": f"Question for {decision_id}?"}],
                    output_text=f"ANSWER-{decision_id.split(':')[1]}-",
                    meta={},
                    decided_at=now,
                )
            )
        await session.commit()


@pytest.fixture
async def live_env(wire: WireServer) -> AsyncIterator[GraderEnv]:
    gpt = OpenAIProvider(api_key=SecretStr(KEY), base_url=wire.openai_base_url)
    claude = AnthropicProvider(api_key=SecretStr(KEY), base_url=wire.anthropic_base_url)
    yield GraderEnv(
        provider_for=lambda model: gpt if model.startswith("gpt") else claude,
        items={},
        judge_prompts=load_judge_prompts(),
    )
    await gpt.aclose()
    await claude.aclose()


async def test_grading_job_end_to_end(
    sessions: async_sessionmaker[AsyncSession], wire: WireServer, live_env: GraderEnv
) -> None:
    wire.respond(OPENAI_PATH, e2e_responder("openai"))
    wire.respond(ANTHROPIC_PATH, e2e_responder("anthropic"))
    rows = [
        (f"{api}:{m}", OPENAI_CLASS if api == "openai" else ANTHROPIC_CLASS)
        for api in APIS
        for m in MARKERS
    ]
    await seed(sessions, rows)

    run = await grade_pending(sessions, live_env, concurrency=4)

    # Judge calls per sample, counted on the server: one each, plus the one retry the job
    # gives a grade without a verdict (the job books both calls on the final grade).
    calls = {decision_id: 0 for decision_id, _ in rows}
    for hit in wire.hits():
        api = "openai" if hit.path == OPENAI_PATH else "anthropic"
        prompt = json.dumps(hit.body)
        calls[f"{api}:{next(m for m in MARKERS if f'ANSWER-{m}-' in prompt)}"] += 1
    expected_calls = {"AGREE": 1, "DISAGREE": 1, "REFUSE": 2, "TRUNCATE": 2}
    assert calls == {d: expected_calls[d.split(":")[1]] for d in calls}
    per_call = {"openai": (OPENAI_E2E_COST, 2006), "anthropic": (ANTHROPIC_E2E_COST, 3006)}

    assert (run.claimed, run.graded, run.failed, run.deferred) == (12, 8, 0, 0)
    assert run.verdicts == {"agree": 2, "disagree": 2, "refused": 2, "invalid": 2}
    assert run.cost_usd == pytest.approx(6 * OPENAI_E2E_COST + 6 * ANTHROPIC_E2E_COST)
    async with sessions() as session:
        grades = {g.decision_id: g for g in (await session.exec(select(Grade))).all()}
        statuses = set((await session.exec(select(Sample.status))).all())
    assert statuses == {"graded"}
    expected = {
        "AGREE": ("agree", "ok", 8.0),
        "DISAGREE": ("disagree", "ok", 3.0),
        "REFUSE": ("refused", "refused", None),
        "TRUNCATE": ("invalid", "truncated", None),
    }
    for decision_id, _ in rows:
        api, marker = decision_id.split(":")
        grade = grades[decision_id]
        n, (usd, tokens_in) = calls[decision_id], per_call[api]
        assert (grade.verdict, grade.parse_status, grade.score) == expected[marker], decision_id
        assert grade.reference_model == ("gpt-4o" if api == "openai" else "claude-3-5-sonnet")
        assert (grade.input_tokens, grade.output_tokens) == (n * tokens_in, n * 300)
        assert grade.cost_nusd == round(n * usd * 1e9)
    assert {h.body["model"] for h in wire.hits(OPENAI_PATH)} == {"gpt-4o"}
    assert {h.body["model"] for h in wire.hits(ANTHROPIC_PATH)} == {"claude-3-5-sonnet"}


async def test_grading_job_defers_a_long_rate_limit_to_the_next_run(
    sessions: async_sessionmaker[AsyncSession], wire: WireServer, live_env: GraderEnv
) -> None:
    await seed(sessions, [("anthropic:AGREE", ANTHROPIC_CLASS)])
    wire.enqueue(ANTHROPIC_PATH, error_reply(ANTHROPIC_PATH, 429, headers={"retry-after": "120"}))
    started = time.monotonic()
    run = await grade_pending(sessions, live_env)  # returns: the sample is not claimed again
    assert time.monotonic() - started < 2.0
    assert (run.claimed, run.graded, run.deferred, run.failed) == (1, 0, 1, 0)
    again = await grade_pending(sessions, live_env)
    assert (again.claimed, again.deferred) == (0, 0)  # held until the hint has passed
    assert len(wire.hits(ANTHROPIC_PATH)) == 1
    async with sessions() as session:
        sample = (
            await session.exec(select(Sample).where(col(Sample.decision_id) == "anthropic:AGREE"))
        ).one()
        assert (sample.status, sample.attempts) == ("claimed", 0)
        assert sample.lease_until is not None
        held = (sample.lease_until - utcnow()).total_seconds()
        assert 115 < held <= 120
        assert (await session.exec(select(Grade))).all() == []
