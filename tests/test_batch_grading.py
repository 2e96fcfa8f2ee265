"""Batch grading through the real SDKs against a loopback of both providers' batch endpoints
(tests/batch_wire.py): what a result line means, matching by custom id, and a batch item priced
at the catalog's batch discount and booked once (docs/field-cases.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import load_judge_prompts
from evaluator.graders import GraderEnv
from evaluator.grading import grade_pending
from evaluator.grading.batch import poll_batches, submit_batches
from evaluator.models import Grade, GradingBatch, GradingBatchItem, GradingCost
from router.db import utcnow
from router.models import Sample
from router.policy import builtin_policy_path, parse_policy
from router.providers.anthropic import AnthropicProvider
from router.providers.base import ChatRequest, ChatResponse
from router.providers.batch import BatchItemError
from router.providers.openai import OpenAIProvider
from tests.batch_wire import BatchWire, anthropic_errored, anthropic_succeeded, openai_ok
from tests.conftest import apply
from tests.seeding import add_samples

pytestmark = pytest.mark.asyncio


@pytest.fixture
def wire() -> Iterator[BatchWire]:
    with BatchWire() as server:
        yield server


def openai(wire: BatchWire) -> OpenAIProvider:
    return OpenAIProvider(api_key=SecretStr("sk-test"), base_url=f"{wire.url}/v1", max_retries=0)


def anthropic(wire: BatchWire) -> AnthropicProvider:
    return AnthropicProvider(api_key=SecretStr("sk-ant"), base_url=wire.url, max_retries=0)


def call(text: str, model: str = "gpt-4o") -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}])


async def test_an_error_status_inside_an_output_line_is_a_failed_item(wire: BatchWire) -> None:
    line = {
        "custom_id": "g-42",
        "response": {"status_code": 400, "body": {"error": {"type": "invalid_request_error"}}},
        "error": None,
    }
    wire.openai_outcome = lambda lines: ("completed", [line], None)
    provider = openai(wire)
    batch_id = await provider.submit_batch([("g-42", call("hi"))])
    poll = await provider.poll_batch(batch_id, {"g-42"})
    item = poll.results["g-42"]
    assert poll.ended and isinstance(item, BatchItemError)
    assert (item.kind, item.status, item.transient) == ("errored", 400, False)
    sent = wire.submitted[batch_id][0]
    assert (sent["method"], sent["url"], sent["body"]["model"]) == (
        "POST",
        "/v1/chat/completions",
        "gpt-4o",
    )
    await provider.aclose()


async def test_a_completed_batch_without_output_file_and_an_expired_batch_keep_what_came(
    wire: BatchWire,
) -> None:
    expired = {"custom_id": "b", "response": None, "error": {"code": "batch_expired"}}
    wire.openai_outcome = lambda lines: ("expired", [openai_ok("a", "ok", 10, 2)], [expired])
    provider = openai(wire)
    batch_id = await provider.submit_batch([("a", call("1")), ("b", call("2"))])
    poll = await provider.poll_batch(batch_id, {"a", "b"})
    assert isinstance(poll.results["a"], ChatResponse)
    assert isinstance(poll.results["b"], BatchItemError) and poll.results["b"].kind == "expired"
    wire.openai_outcome = lambda lines: ("completed", None, None)
    batch_id = await provider.submit_batch([("c", call("3"))])
    poll = await provider.poll_batch(batch_id, {"c"})
    assert poll.ended and dict(poll.results) == {}
    await provider.aclose()


async def test_anthropic_result_types(wire: BatchWire) -> None:
    def outcome(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            anthropic_succeeded("ok", "Rating: [[8]]", 10, 5),
            anthropic_errored("busy", "overloaded_error"),
            anthropic_errored("bad", "invalid_request_error"),
            {"custom_id": "late", "result": {"type": "expired"}},
            {"custom_id": "stop", "result": {"type": "canceled"}},
        ]

    wire.anthropic_outcome = outcome
    provider = anthropic(wire)
    ids = ["ok", "busy", "bad", "late", "stop"]
    batch_id = await provider.submit_batch([(c, call(c, "claude-3-5-sonnet")) for c in ids])
    poll = await provider.poll_batch(batch_id, set(ids))
    got = poll.results
    assert isinstance(got["ok"], ChatResponse) and got["ok"].text == "Rating: [[8]]"
    kinds = {c: (r.kind, r.transient) for c, r in got.items() if isinstance(r, BatchItemError)}
    assert kinds == {
        "busy": ("errored", True),
        "bad": ("errored", False),
        "late": ("expired", False),
        "stop": ("canceled", False),
    }
    assert wire.submitted[batch_id][0]["params"]["model"] == "claude-3-5-sonnet"
    await provider.aclose()


async def test_results_are_matched_by_custom_id_and_unknown_ids_rejected(
    wire: BatchWire,
) -> None:
    def outcome(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [anthropic_succeeded(c, f"answer {c}", 1, 1) for c in ("g3", "g1", "g2", "g9")]

    wire.anthropic_outcome = outcome
    wire.not_found_after_create = True
    provider = anthropic(wire)
    items = [(c, call(c, "claude-3-5-sonnet")) for c in ("g1", "g2", "g3")]
    batch_id = await provider.submit_batch(items)
    with pytest.raises(Exception) as first:  # a 404 right after create: transient
        await provider.poll_batch(batch_id, {"g1", "g2", "g3"})
    assert getattr(first.value, "transient", False)
    poll = await provider.poll_batch(batch_id, {"g1", "g2", "g3"})
    texts = {c: r.text for c, r in poll.results.items() if isinstance(r, ChatResponse)}
    assert texts == {"g1": "answer g1", "g2": "answer g2", "g3": "answer g3"}
    assert list(poll.rejected) == ["g9"]
    await provider.aclose()


BATCH_POLICY = """
[[classes]]
match = "poetry"
grading = "batch"
reference_model = "gpt-4o"
"""


async def test_a_batch_item_is_priced_at_the_discount_and_booked_once(
    sessions: async_sessionmaker[AsyncSession], wire: BatchWire
) -> None:
    body = builtin_policy_path("default").read_text() + BATCH_POLICY
    await apply(sessions, parse_policy(body))
    async with sessions() as session:
        add_samples(
            session,
            ["poem-1"],
            task_class="poetry",
            model="claude-3-5-haiku",
            at=utcnow(),
            messages=[{"role": "user", "content": "Write a poem."}],
            output_text="A poem.",
        )
        await session.commit()
    wire.openai_outcome = lambda lines: (
        "completed",
        [openai_ok(line["custom_id"], "Rating: [[8]]", 1000, 200) for line in lines],
        None,
    )
    provider = openai(wire)
    env = GraderEnv(provider_for=lambda _m: provider, items={}, judge_prompts=load_judge_prompts())
    assert (await grade_pending(sessions, env)).claimed == 0  # the real-time job leaves it
    assert (await submit_batches(sessions, env)).submitted == 1
    run = await poll_batches(sessions, env)
    assert run.graded == 1
    assert run.cost_nusd == 2_250_000  # 0.00225 USD, exactly
    for _ in range(3):  # the same finished batch read again: still one cost row
        async with sessions() as session:
            for batch in (await session.exec(select(GradingBatch))).all():
                batch.status = "submitted"
            for item in (await session.exec(select(GradingBatchItem))).all():
                item.status = "pending"
            await session.commit()
        await poll_batches(sessions, env)
    async with sessions() as session:
        costs = (await session.exec(select(GradingCost))).all()
        grade = (await session.exec(select(Grade))).one()
        sample = (await session.exec(select(Sample))).one()
    assert [c.cost_nusd for c in costs] == [2_250_000]
    assert (grade.verdict, sample.status) == ("agree", "graded")
    assert grade.cost_nusd == 2_250_000
    await provider.aclose()
