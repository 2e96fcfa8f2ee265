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
from evaluator.grading.batch import custom_id_of, poll_batches, submit_batches
from evaluator.models import Grade, GradingBatch, GradingBatchItem, GradingCost
from evaluator.report import verdict_delays
from router.db import utcnow
from router.models import Sample
from router.money import usd
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
    assert usd(costs[0].cost_nusd) == pytest.approx(0.00225)
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
    assert usd(costs[0].cost_nusd) == pytest.approx(0.003)
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
    assert len(costs) == 4 and sum(usd(c.cost_nusd) or 0 for c in costs) == pytest.approx(4 * 0.003)
    assert usd(grades["r-busy"].cost_nusd) == pytest.approx(0.003)


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
    async with sessions() as session:  # the report's time from sample to verdict, per mode
        delays = await verdict_delays(session)
    assert [(d.mode, d.grades) for d in delays] == [("batch", 3)]
    assert 0 <= delays[0].median_s <= delays[0].p90_s


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
    assert [usd(c.cost_nusd) for c in costs] == [pytest.approx(PRICED[provider])]
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
    assert [usd(c.cost_nusd) for c in costs] == [pytest.approx(PRICED[provider])]
    assert usd(grades["t1"].cost_nusd) == pytest.approx(PRICED[provider])


def verdict_json(winner: str) -> str:
    return json.dumps({"explanation": "compared", "verdict": winner})


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_pairwise_judge_runs_stage_by_stage_through_batches(
    sessions: async_sessionmaker[AsyncSession], setup: Setup, provider: str
) -> None:
    answers = {"w-worse": "poem worse", "w-flip": "poem flip"}
    await seed(sessions, REFERENCE[provider], answers, grader="judge_pairwise")
    # Judge order A puts the graded answer first, order B the reference answer first.
    winners = {"poem worse": {"A": "B", "B": "A"}, "poem flip": {"A": "A", "B": "A"}}
    # A custom id starts with a digest of its decision id (the reference call carries only
    # the question, so the answer text cannot tell the samples apart).
    marker_by_digest = {custom_id_of(d, 0, "").split("-")[0]: t for d, t in answers.items()}
    keys_per_batch: list[list[str]] = []

    def make(submitted: list[tuple[str, dict[str, Any]]]) -> Rows:
        keys_per_batch.append(sorted({c.split("-", 2)[2] for c, _ in submitted}))
        rows = []
        for custom_id, request in submitted:
            key = custom_id.split("-", 2)[2]
            marker = marker_by_digest[custom_id.split("-")[0]]
            if key == "reference":
                text = f"the reference poem for {marker.split()[1]}"
            else:  # built from the first stage's answer: both texts are in the prompt
                assert f"the reference poem for {marker.split()[1]}" in json.dumps(request)
                assert marker in json.dumps(request)
                text = verdict_json(winners[marker][key.removeprefix("judge_")])
            rows.append(ok_line(provider, custom_id, text))
        return rows

    script(setup, provider, make)
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    first = await poll_batches(sessions, setup.env)
    # The reference answers came back; the two judge orders went out as the next stage.
    assert (first.ended, first.answered, first.graded, first.submitted) == (1, 2, 0, 1)
    samples, grades, costs = await state(sessions)
    assert set(samples.values()) == {"claimed"} and not grades and len(costs) == 2
    second = await poll_batches(sessions, setup.env)
    assert (second.ended, second.answered, second.graded, second.submitted) == (1, 4, 2, 0)
    assert keys_per_batch == [["reference"], ["judge_A", "judge_B"]]
    samples, grades, costs = await state(sessions)
    assert set(samples.values()) == {"graded"}
    assert (grades["w-worse"].verdict, grades["w-worse"].score) == ("disagree", 0.0)
    assert (grades["w-flip"].verdict, grades["w-flip"].parse_status) == ("agree", "position_flip")
    assert "the reference poem for worse" in grades["w-worse"].raw_output
    assert len(costs) == 6  # a reference answer and two judgments per sample, each booked once
    for decision_id in answers:  # three calls of 1000 in / 200 out at the batch rate
        assert usd(grades[decision_id].cost_nusd) == pytest.approx(3 * PRICED[provider])
        assert (grades[decision_id].input_tokens, grades[decision_id].output_tokens) == (3000, 600)
    async with sessions() as session:
        items = (await session.exec(select(GradingBatchItem))).all()
    assert sorted((i.decision_id, i.stage, i.key) for i in items) == sorted(
        (d, stage, key)
        for d in answers
        for stage, key in ((1, "reference"), (2, "judge_A"), (2, "judge_B"))
    )


async def test_a_batch_open_past_its_deadline_sends_its_samples_back_to_the_queue(
    sessions: async_sessionmaker[AsyncSession], setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(sessions, "gpt-4o", {"s-1": "poem slow one", "s-2": "poem slow two"})
    setup.wire.openai_outcome = lambda lines: ("in_progress", None, None)
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    still = await poll_batches(sessions, setup.env)
    assert (still.ended, still.requeued) == (0, 0)
    samples, _, _ = await state(sessions)
    assert set(samples.values()) == {"claimed"}
    async with sessions() as session:
        batch = (await session.exec(select(GradingBatch))).one()
        assert (batch.status, batch.provider_status) == ("submitted", "in_progress")
        batch.deadline = utcnow() - timedelta(seconds=1)
        await session.commit()
    with caplog.at_level(logging.WARNING, logger="evaluator.grading.batch"):
        run = await poll_batches(sessions, setup.env)
    assert (run.ended, run.requeued, run.graded) == (0, 2, 0)
    samples, grades, costs = await state(sessions)
    assert samples == {"s-1": "queued", "s-2": "queued"} and not grades and not costs
    assert "abandoned past its deadline" in caplog.text
    async with sessions() as session:
        batch = (await session.exec(select(GradingBatch))).one()
    assert batch.status == "abandoned"
    # Back in the queue, they go out in a new batch and are graded when it answers.
    script(setup, "openai", lambda sub: [ok_line("openai", c, "Rating: [[8]]") for c, _ in sub])
    assert (await submit_batches(sessions, setup.env)).submitted == 1
    assert (await poll_batches(sessions, setup.env)).graded == 2


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_expired_or_canceled_batch_sends_its_unanswered_samples_back_to_the_queue(
    sessions: async_sessionmaker[AsyncSession], setup: Setup, provider: str
) -> None:
    answers = {"e-done": "poem answered", "e-late": "poem never ran", "e-gone": "poem absent"}
    await seed(sessions, REFERENCE[provider], answers)
    markers = list(answers.values())
    if provider == "openai":

        def openai_outcome(lines: Rows) -> tuple[str, Rows | None, Rows | None]:
            out, errors = [], []
            for line in lines:
                which = marker_of(line, markers)
                if which == "poem answered":
                    out.append(openai_ok(line["custom_id"], "Rating: [[8]]", 1000, 200))
                elif which == "poem never ran":
                    error = {"code": "batch_expired", "message": "not run in 24h"}
                    errors.append(
                        {"custom_id": line["custom_id"], "response": None, "error": error}
                    )
            return "expired", out, errors  # the third id is in neither file

        setup.wire.openai_outcome = openai_outcome
    else:

        def anthropic_outcome(requests: Rows) -> Rows:
            rows = []
            for request in requests:
                which = marker_of(request, markers)
                if which == "poem answered":
                    rows.append(anthropic_succeeded(request["custom_id"], "[[8]]", 1000, 200))
                elif which == "poem never ran":
                    rows.append({"custom_id": request["custom_id"], "result": {"type": "canceled"}})
            return rows  # the third id never comes back

        setup.wire.anthropic_outcome = anthropic_outcome
    await submit_batches(sessions, setup.env)
    run = await poll_batches(sessions, setup.env)
    assert (run.ended, run.graded, run.requeued, run.failed) == (1, 1, 2, 0)
    samples, grades, costs = await state(sessions)
    assert samples == {"e-done": "graded", "e-late": "queued", "e-gone": "queued"}
    assert set(grades) == {"e-done"}
    assert [c.decision_id for c in costs] == ["e-done"]  # partial results kept and booked
    assert usd(costs[0].cost_nusd) == pytest.approx(PRICED[provider])
