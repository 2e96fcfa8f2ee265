"""The text retention job: a sample's text is deleted once it is older than its class's
``text_retention_days``; the sample row and its grade are kept (verdict, score, spend), so the
escalation evidence and the books do not change.

What "the text" is: ``sample.input_messages`` (emptied to ``[]``), ``sample.output_text`` and
``grade.raw_output`` (the judge's or reference model's reply, blanked to ``""``) and the replies
held by answered ``grading_batch_item`` rows (``response`` set to NULL). ``sample.meta`` is the
caller's route metadata, not sampled text, and is kept like the decision's. A sample still
waiting for grading when its text expires (queued, or claimed with an expired lease) can no
longer be graded and becomes ``failed``; one under a live lease is left for a later run.

The age is the sample's ``created_at`` (when its text was stored). The run works in batches of
``batch_size`` samples, one transaction each, at most ``max_batches`` per run (the rest waits
for the next tick), over the partial index ``ix_sample_text_kept``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation._repository import claim_tick, record_tick_result
from evaluator.models import Grade, GradingBatchItem
from router.db import utcnow
from router.dialect import skip_locked, try_advisory_lock
from router.models import Sample, TaskClass
from router.table import latest_policy

log = logging.getLogger(__name__)

JOB = "text-retention"
WAITING = ("queued", "claimed")


@dataclass
class TextRetentionRun:
    """What one run did: ``deleted`` samples whose text was deleted, ``expired_ungraded`` of
    them still waiting for a grade (now ``failed``), in ``batches`` transactions; ``more``:
    the run stopped at its batch limit with text still due. ``skipped``: another worker ran
    (or is running) this tick."""

    skipped: bool = False
    deleted: int = 0
    expired_ungraded: int = 0
    batches: int = 0
    more: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "expired_ungraded": self.expired_ungraded,
            "batches": self.batches,
            "more": self.more,
        }


async def _claim(sessions: async_sessionmaker[AsyncSession], tick: datetime, worker: str) -> bool:
    async with sessions() as session:
        if not await try_advisory_lock(session, JOB) or not await claim_tick(
            session, JOB, tick, worker
        ):
            await session.rollback()
            return False
        await session.commit()
    return True


async def _delete_batch(
    session: AsyncSession, task_class: str, cutoff: datetime, now: datetime, limit: int
) -> tuple[int, int]:
    """Delete the text of up to ``limit`` of ``task_class``'s samples stored before ``cutoff``;
    (samples, of which waiting for a grade)."""
    stmt = (
        sa.select(col(Sample.decision_id), col(Sample.status))
        .where(
            col(Sample.task_class) == task_class,
            col(Sample.text_deleted_at).is_(None),
            col(Sample.created_at) < cutoff,
            sa.or_(col(Sample.lease_until).is_(None), col(Sample.lease_until) < now),
        )
        .order_by(col(Sample.created_at))
        .limit(limit)
    )
    conn = await session.connection()
    locked: Any = skip_locked(session, cast(Any, stmt))
    rows = (await conn.execute(locked)).all()
    if not rows:
        return 0, 0
    ids = [str(r[0]) for r in rows]
    waiting = sum(1 for r in rows if r[1] in WAITING)
    await session.exec(
        sa.update(Sample)
        .where(col(Sample.decision_id).in_(ids))
        .values(
            input_messages=[],
            output_text="",
            text_deleted_at=now,
            lease_until=None,
            status=sa.case((col(Sample.status).in_(WAITING), "failed"), else_=col(Sample.status)),
        )
    )
    await session.exec(
        sa.update(Grade).where(col(Grade.decision_id).in_(ids)).values(raw_output="")
    )
    await session.exec(
        sa.update(GradingBatchItem)
        .where(
            col(GradingBatchItem.decision_id).in_(ids), col(GradingBatchItem.status) != "pending"
        )
        .values(response=None)
    )
    return len(ids), waiting


async def delete_expired_text(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tick: datetime | None = None,
    worker: str = "",
    now: datetime | None = None,
    batch_size: int = 1000,
    max_batches: int = 100,
) -> TextRetentionRun:
    """Delete the text of every sample older than its class's ``text_retention_days`` (days;
    the policy applied last), in batches of ``batch_size`` samples, at most ``max_batches``.

    ``tick`` (scheduled runs): the run claims its tick in ``job_run`` under an advisory lock
    and is skipped when another worker has it; without it (tests, the CLI) it just runs.
    """
    run = TextRetentionRun()
    if tick is not None and not await _claim(sessions, tick, worker):
        run.skipped = True
        return run
    now = now or utcnow()
    async with sessions() as session:
        policy = await latest_policy(session)
        classes = sorted((await session.exec(select(TaskClass.name))).all())
    if policy is not None:
        for task_class in classes:
            days = policy.settings_for(task_class).text_retention_days
            cutoff = now - timedelta(days=days)
            while True:
                if run.batches >= max_batches:
                    run.more = True
                    break
                async with sessions() as session:
                    deleted, waiting = await _delete_batch(
                        session, task_class, cutoff, now, batch_size
                    )
                    await session.commit()
                if not deleted:
                    break
                run.batches += 1
                run.deleted += deleted
                run.expired_ungraded += waiting
                if deleted < batch_size:
                    break
            if run.more:
                break
    if tick is not None:
        async with sessions() as session:
            await record_tick_result(session, JOB, tick, run.summary())
            await session.commit()
    if run.deleted:
        log.info("text retention: %s", run.summary())
    return run
