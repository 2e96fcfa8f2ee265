"""The batch grading jobs (submit, poll) end to end on SQLite and PostgreSQL: the real SDKs of
both providers against the loopback of their batch endpoints (tests/batch_wire.py), the jobs'
own database writes, and what each result does to its sample, to the books and to the log
(docs/field-cases.md: an error inside a batch response body, every batch result type, order and
identity of results, a batch billed once)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import load_judge_prompts
from evaluator.graders import GraderEnv
from evaluator.grading.batch import poll_batches, submit_batches
from evaluator.models import Grade, GradingBatch, GradingBatchItem, GradingCost
from router.db import utcnow
from router.models import Sample
from router.policy import builtin_policy_path, parse_policy
from router.providers.anthropic import AnthropicProvider
from router.providers.base import Provider
from router.providers.openai import OpenAIProvider
from tests.batch_wire import BatchWire, anthropic_errored, anthropic_succeeded, openai_ok
from tests.conftest import apply
from tests.seeding import add_samples

pytestmark = pytest.mark.asyncio

Rows = list[dict[str, Any]]


@dataclass
class Setup:
    """The loopback, both providers on it, and a grader env routing claude-* to Anthropic."""

    wire: BatchWire
    openai: OpenAIProvider
    anthropic: AnthropicProvider
    env: GraderEnv


@pytest.fixture
def wire() -> Iterator[BatchWire]:
    with BatchWire() as server:
        yield server


@pytest.fixture
async def setup(wire: BatchWire) -> AsyncIterator[Setup]:
    oa = OpenAIProvider(api_key=SecretStr("sk-test"), base_url=f"{wire.url}/v1", max_retries=0)
    an = AnthropicProvider(api_key=SecretStr("sk-ant"), base_url=wire.url, max_retries=0)

    def provider_for(model: str) -> Provider:
        return an if model.startswith("claude") else oa

    env = GraderEnv(provider_for=provider_for, items={}, judge_prompts=load_judge_prompts())
    yield Setup(wire, oa, an, env)
    await oa.aclose()
    await an.aclose()


def batch_policy(reference: str, grader: str = "judge_single") -> str:
    return builtin_policy_path("default").read_text() + (
        f'\n[[classes]]\nmatch = "poetry"\ngrading = "batch"\n'
        f'reference_model = "{reference}"\ngrader = "{grader}"\n'
    )


async def seed(
    sessions: async_sessionmaker[AsyncSession],
    reference: str,
    answers: dict[str, str],
    grader: str = "judge_single",
) -> None:
    """A batch-graded class ``poetry`` and one queued sample per (decision id, answer text)."""
    await apply(sessions, parse_policy(batch_policy(reference, grader)))
    async with sessions() as session:
        start = utcnow() - timedelta(minutes=5)
        for n, (did, text) in enumerate(answers.items()):
            add_samples(
                session,
                [did],
                task_class="poetry",
                model="claude-3-5-haiku",
                at=start + timedelta(seconds=n),
                messages=[{"role": "user", "content": "Write a poem."}],
                output_text=text,
            )
        await session.commit()


def marker_of(request: dict[str, Any], markers: list[str]) -> str:
    """Which answer text a submitted request (an OpenAI input line or an Anthropic request)
    carries."""
    dumped = json.dumps(request)
    found = [m for m in markers if m in dumped]
    assert len(found) == 1, dumped
    return found[0]


def ok_line(provider: str, custom_id: str, text: str) -> dict[str, Any]:
    """A successful answer of 1000 input and 200 output tokens in either provider's shape."""
    if provider == "openai":
        return openai_ok(custom_id, text, 1000, 200)
    return anthropic_succeeded(custom_id, text, 1000, 200)


def script(
    s: Setup, provider: str, make: Callable[[list[tuple[str, dict[str, Any]]]], Rows]
) -> None:
    """Let ``make`` (given the submitted (custom id, request) pairs) write the results file of
    every batch of ``provider``, in whatever order and with whatever ids it likes."""
    if provider == "openai":
        s.wire.openai_outcome = lambda lines: (
            "completed",
            make([(line["custom_id"], line) for line in lines]),
            None,
        )
    else:
        s.wire.anthropic_outcome = lambda requests: make([(r["custom_id"], r) for r in requests])


REFERENCE = {"openai": "gpt-4o", "anthropic": "claude-3-5-sonnet"}
PRICED = {"openai": 0.00225, "anthropic": 0.003}
"""1000 input and 200 output tokens at half price: gpt-4o 2.50 / 10, claude-3-5-sonnet 3 / 15."""


async def state(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[dict[str, str], dict[str, Grade], list[GradingCost]]:
    async with sessions() as session:
        samples = {s.decision_id: s.status for s in (await session.exec(select(Sample))).all()}
        grades = {g.decision_id: g for g in (await session.exec(select(Grade))).all()}
        costs = list((await session.exec(select(GradingCost).order_by(col(GradingCost.id)))).all())
    return samples, grades, costs


async def test_an_error_inside_a_response_body_fails_the_sample_through_the_jobs(
    sessions: async_sessionmaker[AsyncSession], setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(sessions, "gpt-4o", {"p-ok": "a fine poem", "p-bad": "a bad poem"})

    def make(submitted: list[tuple[str, dict[str, Any]]]) -> Rows:
        rows = []
        for custom_id, line in submitted:
            if marker_of(line, ["a fine poem", "a bad poem"]) == "a bad poem":
                body = {"error": {"type": "invalid_request_error"}}
                rows.append(
                    {
                        "custom_id": custom_id,
                        "response": {"status_code": 400, "body": body},
                        "error": None,
                    }
                )
            else:
                rows.append(openai_ok(custom_id, "Rating: [[8]]", 1000, 200))
        return rows

    script(setup, "openai", make)
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    with caplog.at_level(logging.WARNING, logger="evaluator.grading.batch"):
        run = await poll_batches(sessions, setup.env)
    assert (run.ended, run.answered, run.graded, run.failed, run.requeued) == (1, 1, 1, 1, 0)
    samples, grades, costs = await state(sessions)
    assert samples == {"p-ok": "graded", "p-bad": "failed"}
    # A failed grade is no verdict: out of both numerator and denominator of the rate.
    assert set(grades) == {"p-ok"} and grades["p-ok"].verdict == "agree"
    assert [c.decision_id for c in costs] == ["p-ok"]
    assert costs[0].cost_usd == pytest.approx(0.00225)
    assert "HTTP 400" in caplog.text and "errored" in caplog.text
    async with sessions() as session:
        batch = (await session.exec(select(GradingBatch))).one()
    assert (batch.status, batch.succeeded, batch.errored, batch.expired) == ("ended", 1, 1, 0)


async def test_every_anthropic_result_type_moves_its_sample_through_the_jobs(
    sessions: async_sessionmaker[AsyncSession], setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    answers = {
        "r-ok": "poem succeeded",
        "r-busy": "poem overloaded",
        "r-bad": "poem invalid",
        "r-late": "poem expired",
        "r-stop": "poem canceled",
    }
    await seed(sessions, "claude-3-5-sonnet", answers)
    markers = list(answers.values())
    first_round = True

    def make(submitted: list[tuple[str, dict[str, Any]]]) -> Rows:
        rows = []
        for custom_id, request in submitted:
            which = marker_of(request, markers)
            if which == "poem succeeded" or not first_round:
                rows.append(anthropic_succeeded(custom_id, "Rating: [[8]]", 1000, 200))
            elif which == "poem overloaded":
                rows.append(anthropic_errored(custom_id, "overloaded_error"))
            elif which == "poem invalid":
                rows.append(anthropic_errored(custom_id, "invalid_request_error"))
            elif which == "poem expired":
                rows.append({"custom_id": custom_id, "result": {"type": "expired"}})
            else:
                rows.append({"custom_id": custom_id, "result": {"type": "canceled"}})
        return rows

    script(setup, "anthropic", make)
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    with caplog.at_level(logging.WARNING, logger="evaluator.grading.batch"):
        run = await poll_batches(sessions, setup.env)
    assert (run.answered, run.graded, run.failed, run.requeued) == (1, 1, 1, 3)
    samples, grades, costs = await state(sessions)
    assert samples == {
        "r-ok": "graded",
        "r-busy": "queued",  # transient error type: tried again
        "r-bad": "failed",  # permanent error type: no verdict, never retried
        "r-late": "queued",
        "r-stop": "queued",
    }
    assert set(grades) == {"r-ok"}
    assert [c.decision_id for c in costs] == ["r-ok"]
    assert costs[0].cost_usd == pytest.approx(0.003)
    assert "overloaded_error" in caplog.text and "invalid_request_error" in caplog.text

    first_round = False  # the queued three go out again and are answered this time
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    async with sessions() as session:
        second = (
            await session.exec(select(GradingBatch).order_by(col(GradingBatch.id).desc()))
        ).first()
    assert second is not None and second.requests == 3
    run = await poll_batches(sessions, setup.env)
    assert run.graded == 3
    samples, grades, costs = await state(sessions)
    assert samples == {**{d: "graded" for d in answers}, "r-bad": "failed"}
    assert set(grades) == set(answers) - {"r-bad"}
    assert len(costs) == 4 and sum(c.cost_usd or 0 for c in costs) == pytest.approx(4 * 0.003)
    assert grades["r-busy"].cost_usd == pytest.approx(0.003)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_reordered_results_match_by_custom_id_and_an_unknown_id_is_rejected(
    sessions: async_sessionmaker[AsyncSession],
    setup: Setup,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    answers = {"g1": "poem one", "g2": "poem two", "g3": "poem three"}
    ratings = {"poem one": "Rating: [[9]]", "poem two": "Rating: [[3]]", "poem three": "[[8]]"}
    await seed(sessions, REFERENCE[provider], answers)

    def make(submitted: list[tuple[str, dict[str, Any]]]) -> Rows:
        by_marker = {marker_of(r, list(ratings)): c for c, r in submitted}
        order = ["poem three", "poem one", "poem two"]  # g3, g1, g2
        rows = [ok_line(provider, by_marker[m], ratings[m]) for m in order]
        return [*rows, ok_line(provider, "g9", "Rating: [[1]]")]

    script(setup, provider, make)
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    with caplog.at_level(logging.WARNING):
        run = await poll_batches(sessions, setup.env)
    assert (run.answered, run.graded, run.rejected) == (3, 3, 1)
    samples, grades, costs = await state(sessions)
    assert set(samples.values()) == {"graded"}
    assert {d: (g.verdict, g.score) for d, g in grades.items()} == {
        "g1": ("agree", 9),
        "g2": ("disagree", 3),
        "g3": ("agree", 8),
    }
    assert all(ratings[answers[d]] in g.raw_output for d, g in grades.items())
    assert sorted(c.decision_id for c in costs) == ["g1", "g2", "g3"]  # g9 booked nowhere
    assert "unknown custom_id 'g9'" in caplog.text


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_duplicate_custom_id_in_a_results_file_counts_once_and_is_logged(
    sessions: async_sessionmaker[AsyncSession],
    setup: Setup,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    await seed(sessions, REFERENCE[provider], {"d1": "poem twice"})

    def make(submitted: list[tuple[str, dict[str, Any]]]) -> Rows:
        ((custom_id, _),) = submitted
        return [
            ok_line(provider, custom_id, "Rating: [[9]]"),
            ok_line(provider, custom_id, "Rating: [[2]]"),
        ]

    script(setup, provider, make)
    await submit_batches(sessions, setup.env)
    with caplog.at_level(logging.WARNING):
        run = await poll_batches(sessions, setup.env)
    assert (run.answered, run.graded, run.rejected) == (1, 1, 1)
    _, grades, costs = await state(sessions)
    assert (grades["d1"].verdict, grades["d1"].score) == ("agree", 9)  # the first one counts
    assert [c.cost_usd for c in costs] == [pytest.approx(PRICED[provider])]
    assert "duplicate result" in caplog.text


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_results_file_read_twice_is_booked_once(
    sessions: async_sessionmaker[AsyncSession], setup: Setup, provider: str
) -> None:
    await seed(sessions, REFERENCE[provider], {"t1": "poem read twice"})
    script(setup, provider, lambda sub: [ok_line(provider, c, "Rating: [[8]]") for c, _ in sub])
    await submit_batches(sessions, setup.env)
    assert (await poll_batches(sessions, setup.env)).cost_usd == pytest.approx(PRICED[provider])
    # A second poller that saw the batch open reads the same ended batch again.
    async with sessions() as session:
        for batch in (await session.exec(select(GradingBatch))).all():
            batch.status = "submitted"
        for item in (await session.exec(select(GradingBatchItem))).all():
            item.status = "pending"
        await session.commit()
    again = await poll_batches(sessions, setup.env)
    assert (again.ended, again.graded) == (1, 0)
    samples, grades, costs = await state(sessions)
    assert samples == {"t1": "graded"} and len(grades) == 1
    assert [c.cost_usd for c in costs] == [pytest.approx(PRICED[provider])]
    assert grades["t1"].cost_usd == pytest.approx(PRICED[provider])
