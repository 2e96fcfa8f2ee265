"""The grading domain's scheduled job (see :mod:`router.jobs`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import GraderEnv
from evaluator.grading._job import GradingRun, grade_pending
from evaluator.grading.batch import BatchRun, poll_batches, submit_batches
from router.jobs import Job

log = logging.getLogger(__name__)


def grading_job(
    sessions: async_sessionmaker[AsyncSession],
    env: Callable[[], Awaitable[GraderEnv]],
    *,
    interval_s: float,
    batch_size: int,
    concurrency: int,
    lease_s: float,
) -> Job:
    """Grade everything queued every ``interval_s`` s. Not once per tick: concurrent workers
    share the queue through row claims, so every worker may run it (``env`` builds the grading
    environment on first use)."""

    async def run(_tick: datetime) -> GradingRun:
        done = await grade_pending(
            sessions, await env(), batch_size=batch_size, concurrency=concurrency, lease_s=lease_s
        )
        if done.claimed:
            log.info("graded %d samples: %s", done.graded, done.verdicts)
        return done

    return Job("grading", run, interval_s)


def batch_grading_jobs(
    sessions: async_sessionmaker[AsyncSession],
    env: Callable[[], Awaitable[GraderEnv]],
    *,
    interval_s: float,
) -> list[Job]:
    """Batch grading's two jobs every ``interval_s`` s on every worker (claims and the unique
    batch and cost rows keep concurrent workers apart): ``batch-submit`` sends batch-graded
    classes' samples to the providers' batch APIs, ``batch-poll`` reads batches that ended
    (:mod:`evaluator.grading.batch`)."""

    async def submit(_tick: datetime) -> BatchRun:
        done = await submit_batches(sessions, await env())
        if done.submitted:
            log.info("submitted %d grading batches", done.submitted)
        return done

    async def poll(_tick: datetime) -> BatchRun:
        done = await poll_batches(sessions, await env())
        if done.ended:
            log.info("%d grading batches ended: %s", done.ended, done.verdicts)
        return done

    return [Job("batch-submit", submit, interval_s), Job("batch-poll", poll, interval_s)]
