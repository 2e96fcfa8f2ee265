"""Write graded verdicts straight into the database (decision -> sample -> grade), for tests of
the escalation job that should not depend on a grader or the replay."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from router.db import utcnow
from router.models import Decision, Sample

_ids = itertools.count()


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
        session.add_all(
            [
                Decision(
                    id=did,
                    task_type=task_class,
                    task_class=task_class,
                    tier="trivial",
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
        await session.flush()
        session.add_all(
            [
                Sample(
                    decision_id=did,
                    task_class=task_class,
                    model=model,
                    input_messages=[{"role": "user", "content": "q"}],
                    output_text="a",
                    status="graded",
                    decided_at=at,
                )
                for did in ids
            ]
        )
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
