"""The control plane of one process: grading environment, jobs, and their scheduler.

The scheduler is APScheduler's ``AsyncIOScheduler`` with interval triggers in UTC; each job has
``coalesce=True`` (missed runs collapse into one), ``max_instances=1`` and a misfire grace time,
so a blocked loop or a restart after downtime runs a job once, not once per missed tick (field
case S2). Across processes on PostgreSQL, the jobs' own locks make each run happen once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.datasets import HeldOutSet, index_items, load_held_out, load_judge_prompts
from evaluator.graders import GraderEnv
from evaluator.jobs import EscalationRun, GradingRun, grade_pending, run_escalation
from evaluator.providers.base import Provider
from evaluator.providers.replay import ReplayProvider

log = logging.getLogger(__name__)

JUDGE_PROMPTS_FILE = "mt_bench_judge_prompts.jsonl"
HELD_OUT_FILES = ("mt_bench.jsonl", "gsm8k.jsonl", "mmlu.jsonl")


def replay_env(sets: Sequence[HeldOutSet], datasets_dir: Path) -> GraderEnv:
    """A grading environment answered entirely from recordings (offline)."""
    provider = ReplayProvider(sets)
    return GraderEnv(
        provider_for=lambda _model: provider,
        items=index_items(sets),
        judge_prompts=load_judge_prompts(datasets_dir / JUDGE_PROMPTS_FILE),
    )


def default_replay_env(datasets_dir: Path) -> GraderEnv:
    """Replay environment over every held-out set shipped in ``datasets_dir``."""
    sets = [load_held_out(datasets_dir / f) for f in HELD_OUT_FILES if (datasets_dir / f).exists()]
    return replay_env(sets, datasets_dir)


def provider_env(provider: Provider, datasets_dir: Path) -> GraderEnv:
    """A grading environment where every reference call goes to ``provider``."""
    return GraderEnv(
        provider_for=lambda _model: provider,
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

    @property
    def env(self) -> GraderEnv:
        if self._env is None:
            self._env = self._env_factory()
        return self._env

    async def grade(self) -> GradingRun:
        """Grade everything queued (the grading job)."""
        run = await grade_pending(
            self._sessions,
            self.env,
            batch_size=self._batch_size,
            concurrency=self._concurrency,
            lease_s=self._lease_s,
        )
        if run.claimed:
            log.info("graded %d samples: %s", run.graded, run.verdicts)
        return run

    async def escalate(self) -> EscalationRun:
        """Apply the escalation rule (the escalation job)."""
        return await run_escalation(self._sessions)

    def start_scheduler(self, *, grading_interval_s: float, escalation_interval_s: float) -> None:
        """Start the in-process scheduler (embedded default, or each evaluator worker)."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        common = {"coalesce": True, "max_instances": 1, "replace_existing": True}
        scheduler.add_job(
            self.grade,
            IntervalTrigger(seconds=grading_interval_s, timezone="UTC"),
            id="grading",
            misfire_grace_time=max(1, int(grading_interval_s)),
            **common,
        )
        scheduler.add_job(
            self.escalate,
            IntervalTrigger(seconds=escalation_interval_s, timezone="UTC"),
            id="escalation",
            misfire_grace_time=max(1, int(escalation_interval_s)),
            **common,
        )
        scheduler.start()
        self._scheduler = scheduler

    def stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
