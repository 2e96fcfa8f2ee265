"""The escalation domain's scheduled job (see :mod:`router.jobs`)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation._job import JOB, EscalationRun, run_escalation
from router.jobs import Job

log = logging.getLogger(__name__)


def escalation_job(
    sessions: async_sessionmaker[AsyncSession], *, interval_s: float, worker: str
) -> Job:
    """Apply the escalation rule once per tick of ``interval_s`` s across every worker (the run
    claims its tick under an advisory lock), catching up once at start-up."""

    async def run(tick: datetime) -> EscalationRun:
        done = await run_escalation(sessions, tick=tick, worker=worker)
        outcome = "duplicate" if done.duplicate else ("locked" if done.skipped else "ran")
        summary = done.summary() if outcome == "ran" else ""
        log.info("escalation tick %s: %s %s", tick.isoformat(), outcome, summary)
        return done

    return Job(JOB, run, interval_s, once_per_tick=True, catch_up=True)
