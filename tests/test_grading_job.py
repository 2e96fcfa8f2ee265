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
from evaluator.jobs import MAX_ATTEMPTS, grade_pending
from evaluator.providers.base import ChatRequest, ChatResponse, Provider
from router.db import utcnow
from router.models import Sample
from router.pricing import Usage
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
        row.status, row.attempts = "claimed", MAX_ATTEMPTS
        row.lease_until = utcnow() - timedelta(seconds=1)
        await session.commit()
    run = await grade_pending(sessions, env())
    assert (run.claimed, run.graded) == (0, 0)
    async with sessions() as session:
        row = await session.get(Sample, "stuck")
        assert row is not None and row.status == "failed"
