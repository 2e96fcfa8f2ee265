"""The control plane of one process: grading environment, jobs, and their scheduler.

The scheduler is APScheduler's ``AsyncIOScheduler`` with UTC interval triggers aligned to the
epoch (an hourly job ticks at the top of every hour in every worker); each job has
``coalesce=True`` (missed runs collapse into one) and ``max_instances=1``. Grading has a misfire
grace of one interval. Escalation has none (``misfire_grace_time=None``): a run delayed by a
blocked event loop still happens, once (docs/field-cases.md); it also runs once at start-up for the
current tick, so a restart after downtime catches up once, not once per missed tick.
Across processes each escalation run claims its tick in ``job_run`` under an advisory lock
(:mod:`evaluator.escalation`), so one worker runs each tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import (
    HeldOutSet,
    index_items,
    load_held_out,
    load_judge_prompts,
    replay_provider,
)
from evaluator.escalation import EPOCH, EscalationRun, run_escalation, tick_of
from evaluator.graders import GraderEnv
from evaluator.grading import GradingRun, grade_pending
from router.providers.base import Provider

log = logging.getLogger(__name__)

JUDGE_PROMPTS_FILE = "mt_bench_judge_prompts.jsonl"
HELD_OUT_FILES = ("mt_bench.jsonl", "gsm8k.jsonl", "mmlu.jsonl")


def replay_env(sets: Sequence[HeldOutSet], datasets_dir: Path) -> GraderEnv:
    """A grading environment answered entirely from recordings (offline)."""
    provider = replay_provider(sets)
    return GraderEnv(
        provider_for=lambda _model: provider,
        items=index_items(sets),
        judge_prompts=load_judge_prompts(datasets_dir / JUDGE_PROMPTS_FILE),
    )


def default_replay_env(datasets_dir: Path) -> GraderEnv:
    """Replay environment over every held-out set shipped in ``datasets_dir``."""
    sets = [load_held_out(datasets_dir / f) for f in HELD_OUT_FILES if (datasets_dir / f).exists()]
    return replay_env(sets, datasets_dir)


def provider_env(provider_for: Callable[[str], Provider], datasets_dir: Path) -> GraderEnv:
    """A grading environment whose calls for a model go to ``provider_for(model)`` (a
    :class:`router.providers.ProviderRegistry`'s ``for_model``)."""
    return GraderEnv(
        provider_for=provider_for,
        items={},
        judge_prompts=load_judge_prompts(datasets_dir / JUDGE_PROMPTS_FILE),
    )


class Evaluator:
    """Jobs of the control plane over one database. The grading environment is built lazily on
    the first grading run (loading held-out sets takes a second)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        env_factory: Callable[[], GraderEnv],
        *,
        batch_size: int = 200,
        concurrency: int = 8,
        lease_s: float = 600.0,
    ) -> None:
        self._sessions = sessions
        self._env_factory = env_factory
        self._env: GraderEnv | None = None
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._lease_s = lease_s
        self._scheduler: AsyncIOScheduler | None = None
        self._escalation_interval_s = 3600.0

    @property
    def env(self) -> GraderEnv:
        """The grading environment, built on first use (synchronously: prefer :meth:`load_env`
        inside the event loop)."""
        if self._env is None:
            self._env = self._env_factory()
        return self._env

    async def load_env(self) -> GraderEnv:
        """The grading environment, built on first use in a worker thread, so loading the
        held-out sets (about half a second) does not stall route calls on the event loop."""
        if self._env is None:
            self._env = await asyncio.to_thread(self._env_factory)
        return self._env

    async def grade(self) -> GradingRun:
        """Grade everything queued (the grading job)."""
        run = await grade_pending(
            self._sessions,
            await self.load_env(),
            batch_size=self._batch_size,
            concurrency=self._concurrency,
            lease_s=self._lease_s,
        )
        if run.claimed:
            log.info("graded %d samples: %s", run.graded, run.verdicts)
        return run

    async def escalate(self, *, tick: datetime | None = None) -> EscalationRun:
        """Apply the escalation rule (the escalation job). ``tick``: record the run for that
        tick and skip it if another worker already ran it (scheduled runs)."""
        return await run_escalation(self._sessions, tick=tick, worker=self.worker)

    @property
    def worker(self) -> str:
        """This worker's name in ``job_run``: host:pid."""
        return f"{socket.gethostname()}:{os.getpid()}"

    async def scheduled_escalation(self) -> EscalationRun:
        """The scheduled escalation job: one run for the current tick."""
        tick = tick_of(datetime.now(UTC), self._escalation_interval_s)
        run = await self.escalate(tick=tick)
        outcome = "duplicate" if run.duplicate else ("locked" if run.skipped else "ran")
        log.info(
            "escalation tick %s: %s %s",
            tick.isoformat(),
            outcome,
            run.summary() if outcome == "ran" else "",
        )
        return run

    def start_scheduler(self, *, grading_interval_s: float, escalation_interval_s: float) -> None:
        """Start the in-process scheduler (embedded default, or each evaluator worker)."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        common = {"coalesce": True, "max_instances": 1, "replace_existing": True}
        self._escalation_interval_s = escalation_interval_s
        scheduler.add_job(
            self.grade,
            IntervalTrigger(seconds=grading_interval_s, start_date=EPOCH, timezone="UTC"),
            id="grading",
            misfire_grace_time=max(1, int(grading_interval_s)),
            **common,
        )
        scheduler.add_job(
            self.scheduled_escalation,
            IntervalTrigger(seconds=escalation_interval_s, start_date=EPOCH, timezone="UTC"),
            id="escalation",
            misfire_grace_time=None,
            **common,
        )
        # Catch up once at start-up for the current tick (a no-op if it already ran); a job of
        # its own, so the interval job keeps its epoch-aligned ticks.
        scheduler.add_job(
            self.scheduled_escalation,
            DateTrigger(run_date=datetime.now(UTC), timezone="UTC"),
            id="escalation-catch-up",
            misfire_grace_time=None,
            **common,
        )
        scheduler.start()
        self._scheduler = scheduler

    def stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
