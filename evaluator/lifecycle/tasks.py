"""The data lifecycle's scheduled jobs (see :mod:`router.jobs`)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.lifecycle._partitions import JOB as PARTITIONS_JOB
from evaluator.lifecycle._partitions import PartitionRun, maintain_partitions
from evaluator.lifecycle._retention import JOB as RETENTION_JOB
from evaluator.lifecycle._retention import TextRetentionRun, delete_expired_text
from router.jobs import Job

log = logging.getLogger(__name__)


def lifecycle_jobs(
    sessions: async_sessionmaker[AsyncSession],
    *,
    interval_s: float,
    worker: str,
    ahead_days: int,
    partition_retention_days: int | None,
    text_batch_size: int,
) -> list[Job]:
    """``text-retention`` (sample text past its class's retention deleted, in batches of
    ``text_batch_size``) and ``partitions`` (PostgreSQL's day partitions created
    ``ahead_days`` ahead, dropped past ``partition_retention_days``), each once per tick of
    ``interval_s`` s across workers, catching up once at start-up."""

    async def retention(tick: datetime) -> TextRetentionRun:
        return await delete_expired_text(
            sessions, tick=tick, worker=worker, batch_size=text_batch_size
        )

    async def partitions(tick: datetime) -> PartitionRun:
        return await maintain_partitions(
            sessions,
            tick=tick,
            worker=worker,
            ahead_days=ahead_days,
            retention_days=partition_retention_days,
        )

    return [
        Job(RETENTION_JOB, retention, interval_s, once_per_tick=True, catch_up=True),
        Job(PARTITIONS_JOB, partitions, interval_s, once_per_tick=True, catch_up=True),
    ]
