"""Write samples and graded verdicts straight into the database (decision -> sample -> grade),
for tests of the jobs that should not depend on the API, a grader or the replay."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from router.db import utcnow
from router.dialect import insert_ignore
from router.models import Decision, Sample, TaskClass

_ids = itertools.count()


def add_samples(
    session: AsyncSession,
    ids: list[str],
    *,
    task_class: str,
    model: str,
    at: datetime,
    messages: list[dict[str, str]] | None = None,
    output_text: str = "a",
    status: str = "queued",
) -> None:
    """Add a sampled decision and its sample for each id (caller flushes/commits). Sample
    ``created_at`` follows the order of ``ids`` so claims take them in that order."""
    session.add_all(
        [
            Decision(
                id=did,
                task_type=task_class,
                task_class=task_class,
                tier="standard",
                model=model,
                provider="test",
                table_version=1,
                sampled=True,
                input_tokens=10,
                has_tool_calls=False,
                created_at=at,
            )
            for did in ids
        ]
    )
    session.add_all(
        [
            Sample(
                decision_id=did,
                task_class=task_class,
                model=model,
                input_messages=messages or [{"role": "user", "content": "q"}],
                output_text=output_text,
                status=status,
                decided_at=at,
                created_at=at + timedelta(microseconds=i),
            )
            for i, did in enumerate(ids)
        ]
    )


async def seed_grades(
    sessions: async_sessionmaker[AsyncSession],
    task_class: str,
    model: str,
    *,
    n: int,
    k: int,
    decided_at: datetime | None = None,
    reference: str = "claude-3-5-sonnet",
    shadow: bool = False,
) -> None:
    """``k`` disagreements and ``n - k`` agreements of ``model`` on ``task_class``, decided at
    ``decided_at`` (default: now + 1 s, i.e. inside the class's current window); with ``shadow``
    they are shadow probes (the cheaper model's verdicts for an escalated class)."""
    at = decided_at or utcnow() + timedelta(seconds=1)
    ids = [f"seed-{next(_ids)}-{at.timestamp():.0f}" for _ in range(n)]
    async with sessions() as session:
        # Routed classes are in the class registry (the decision writer adds them).
        await session.exec(insert_ignore(session, TaskClass).values(name=task_class))
        add_samples(session, ids, task_class=task_class, model=model, at=at, status="graded")
        await session.flush()
        session.add_all(
            [
                Grade(
                    decision_id=did,
                    task_class=task_class,
                    model=model,
                    reference_model=reference,
                    grader="exact",
                    verdict="disagree" if i < k else "agree",
                    parse_status="ok",
                    decided_at=at,
                    shadow=shadow,
                )
                for i, did in enumerate(ids)
            ]
        )
        await session.commit()
