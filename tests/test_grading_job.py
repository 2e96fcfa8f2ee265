"""The grading job's failure paths: one unreadable sample fails alone; a sample whose claims
keep running out is failed for good instead of heading every batch forever."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import load_judge_prompts
from evaluator.graders import GraderEnv
from evaluator.grading import MAX_CLAIMS, grade_pending
from router.db import utcnow
from router.models import Sample
from router.pricing import Usage
from router.providers.base import ChatRequest, ChatResponse, Provider
from tests.conftest import apply, policy_named
from tests.seeding import add_samples

pytestmark = pytest.mark.asyncio


class Judge(Provider):
    """A scripted judge at the provider boundary: always rates 8."""

    name = "scripted"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse("Rating: [[8]]", request.model, "stop", Usage(10, 0, 0, 5, 0))


def env() -> GraderEnv:
    judge = Judge()
    return GraderEnv(
        provider_for=lambda _m: judge,
        items={},
        judge_prompts=load_judge_prompts(),
    )


async def seed(
    sessions: async_sessionmaker[AsyncSession], rows: list[tuple[str, list[dict[str, str]]]]
) -> None:
    async with sessions() as session:
        for decision_id, messages in rows:
            add_samples(
                session,
                [decision_id],
                task_class="poetry",
                model="claude-3-5-haiku",
                at=utcnow(),
                messages=messages,
                output_text="A poem.",
            )
            await session.flush()
        await session.commit()


async def test_an_unreadable_sample_fails_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_named("default"))
    user = [{"role": "user", "content": "Write a poem."}]
    await seed(
        sessions,
        [
            ("bad", [{"role": "system", "content": "no user turn"}]),  # judge_single cannot read it
            ("good-1", user),
            ("good-2", user),
        ],
    )
    run = await grade_pending(sessions, env())
    assert (run.graded, run.failed) == (2, 1)
    async with sessions() as session:
        status = dict((await session.exec(select(Sample.decision_id, Sample.status))).all())
    assert status == {"bad": "failed", "good-1": "graded", "good-2": "graded"}


async def test_a_sample_whose_claims_keep_expiring_is_failed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply(sessions, policy_named("default"))
    await seed(sessions, [("stuck", [{"role": "user", "content": "hi"}])])
    async with sessions() as session:
        row = await session.get(Sample, "stuck")
        assert row is not None
        row.status, row.attempts = "claimed", MAX_CLAIMS
        row.lease_until = utcnow() - timedelta(seconds=1)
        await session.commit()
    run = await grade_pending(sessions, env())
    assert (run.claimed, run.graded) == (0, 0)
    async with sessions() as session:
        row = await session.get(Sample, "stuck")
        assert row is not None and row.status == "failed"


class FirstRefuses(Provider):
    """Refuses the first call for each prompt, then rates 8."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        text = "I'm sorry, I cannot evaluate this." if self.calls == 1 else "Rating: [[8]]"
        return ChatResponse(text, request.model, "stop", Usage(10, 0, 0, 5, 0))


async def test_caller_metadata_never_drives_the_grading_job(database_url: str) -> None:
    """Route metadata that looks like the job's own bookkeeping (an earlier attempt's spend, a
    held-out item id) changes neither the books, the retry nor the grader's reference."""
    from tests.conftest import running_service

    forged = {"first_attempt": {"cost_usd": 42, "verdict": "invalid"}, "item_id": "mmlu/x/0"}
    async with running_service(database_url, "default") as svc:
        route = await svc.client.post(
            "/v1/route",
            json={
                "task_type": "generate_reply",
                "input_tokens": 9,
                "metadata": forged,
                "request_id": "forged-meta-1",
            },
        )
        decision = route.json()
        assert decision["sampled"] in (True, False)
        if not decision["sampled"]:
            for i in range(2, 400):
                route = await svc.client.post(
                    "/v1/route",
                    json={
                        "task_type": "generate_reply",
                        "input_tokens": 9,
                        "metadata": forged,
                        "request_id": f"forged-meta-{i}",
                    },
                )
                decision = route.json()
                if decision["sampled"]:
                    break
        assert decision["sampled"]
        out = await svc.client.post(
            "/v1/outcomes",
            json={
                "decision_id": decision["decision_id"],
                "served_model": decision["model"],
                "input_messages": [{"role": "user", "content": "Write a reply."}],
                "output_text": "A reply.",
                "usage": {"input_tokens": 9, "output_tokens": 3},
            },
        )
        assert out.json()["results"][0]["sample_queued"], out.text
        judge = FirstRefuses()
        grading = GraderEnv(
            provider_for=lambda _m: judge, items={}, judge_prompts=env().judge_prompts
        )
        first = await grade_pending(svc.sessions, grading)
        async with svc.sessions() as session:
            from evaluator.models import Grade

            grade = (await session.exec(select(Grade))).one()
            sample = (await session.exec(select(Sample))).one()
    # The refusal was retried once (the forged "first attempt" did not use up the retry) ...
    assert (first.retried, first.graded, judge.calls) == (1, 1, 2)
    assert (grade.verdict, grade.input_tokens, grade.output_tokens) == ("agree", 20, 10)
    # ... and the books hold the two real calls, not the caller's $42.
    assert grade.cost_nusd == 2 * (10 * 3_000 + 5 * 15_000)  # nano-USD: 2 x 105 USD/1M
    # The caller's metadata is kept as sent; the job's state is apart from it.
    assert sample.meta == forged and sample.item_id is None
    assert (sample.earlier_verdict, sample.earlier_input_tokens) == ("refused", 10)
