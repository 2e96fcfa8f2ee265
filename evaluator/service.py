"""The control plane of one process: the grading environment and the jobs it declares.

The jobs run under :class:`router.jobs.JobScheduler` (started by the composition root, in the
API process or in ``tierwise worker``); the replay driver and the tests call :meth:`Evaluator.grade`
and :meth:`Evaluator.escalate` directly, which run the very same functions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.compression import compression_guard_job
from evaluator.datasets import (
    HeldOutSet,
    index_items,
    load_held_out,
    load_judge_prompts,
    replay_provider,
)
from evaluator.escalation import EscalationRun, run_escalation
from evaluator.escalation.tasks import escalation_job
from evaluator.graders import GraderEnv
from evaluator.grading import GradingRun, grade_pending
from evaluator.grading.batch import BatchRun, poll_batches, submit_batches
from evaluator.grading.tasks import batch_grading_jobs, grading_job
from evaluator.lifecycle.tasks import lifecycle_jobs
from router.jobs import Job
from router.providers.base import Provider

log = logging.getLogger(__name__)

HELD_OUT_FILES = ("mt_bench.jsonl", "gsm8k.jsonl", "mmlu.jsonl")


def replay_env(sets: Sequence[HeldOutSet]) -> GraderEnv:
    """A grading environment answered entirely from recordings (offline)."""
    provider = replay_provider(sets)
    return GraderEnv(
        provider_for=lambda _model: provider,
        items=index_items(sets),
        judge_prompts=load_judge_prompts(),
    )


def held_out_paths(datasets_dir: Path) -> list[Path]:
    """The files of :data:`HELD_OUT_FILES` that ``datasets_dir`` holds, in that order; empty when
    it holds none or does not exist (the replay provider then has nothing to answer from)."""
    return [datasets_dir / f for f in HELD_OUT_FILES if (datasets_dir / f).is_file()]


def default_replay_env(datasets_dir: Path) -> GraderEnv:
    """Replay environment over every held-out set shipped in ``datasets_dir``."""
    return replay_env([load_held_out(p) for p in held_out_paths(datasets_dir)])


def provider_env(provider_for: Callable[[str], Provider]) -> GraderEnv:
    """A grading environment whose calls for a model go to ``provider_for(model)`` (a
    :class:`router.providers.ProviderRegistry`'s ``for_model``)."""
    return GraderEnv(
        provider_for=provider_for,
        items={},
        judge_prompts=load_judge_prompts(),
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

    async def load_env(self) -> GraderEnv:
        """The grading environment, built on first use in a worker thread, so loading the
        held-out sets (about half a second) does not stall route calls on the event loop."""
        if self._env is None:
            self._env = await asyncio.to_thread(self._env_factory)
        return self._env

    async def grade(self) -> GradingRun:
        """Grade everything queued (what the grading job does on each tick)."""
        return await grade_pending(
            self._sessions,
            await self.load_env(),
            batch_size=self._batch_size,
            concurrency=self._concurrency,
            lease_s=self._lease_s,
        )

    async def grade_batches(self, *, max_rounds: int = 8) -> BatchRun:
        """Run the batch submit job once, then the poll job until a poll submits no next stage
        (at most ``max_rounds`` polls): with a provider whose batches end by their first poll
        (the replay provider) every stage of every batch-graded sample is done on return, as
        :meth:`grade` finishes real-time grading; with a real provider the first poll usually
        finds the batches open and returns. Returns the summed counts and booked spend (USD)."""
        env = await self.load_env()
        total = await submit_batches(self._sessions, env)
        for _ in range(max_rounds):
            polled = await poll_batches(self._sessions, env)
            for name in ("submitted", "ended", "answered", "graded", "failed", "requeued"):
                setattr(total, name, getattr(total, name) + getattr(polled, name))
            total.rejected += polled.rejected
            total.cost_nusd += polled.cost_nusd
            for verdict, n in polled.verdicts.items():
                total.verdicts[verdict] = total.verdicts.get(verdict, 0) + n
            if polled.submitted == 0:
                break
        return total

    async def escalate(self, *, tick: datetime | None = None) -> EscalationRun:
        """Apply the escalation rule (the escalation job). ``tick``: record the run for that
        tick and skip it if another worker already ran it (scheduled runs)."""
        return await run_escalation(self._sessions, tick=tick, worker=self.worker)

    @property
    def worker(self) -> str:
        """This worker's name in ``job_run``: host:pid."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def lifecycle_jobs(
        self,
        *,
        interval_s: float,
        ahead_days: int,
        partition_retention_days: int | None,
        text_batch_size: int,
    ) -> list[Job]:
        """The data lifecycle's jobs (``evaluator.lifecycle.tasks``): text retention and
        PostgreSQL's day partitions, every ``interval_s`` s, once per tick across workers."""
        return lifecycle_jobs(
            self._sessions,
            interval_s=interval_s,
            worker=self.worker,
            ahead_days=ahead_days,
            partition_retention_days=partition_retention_days,
            text_batch_size=text_batch_size,
        )

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """The database the control plane's jobs work on."""
        return self._sessions

    def jobs(self, *, grading_interval_s: float, escalation_interval_s: float) -> list[Job]:
        """The control plane's scheduled jobs, each declared by its domain: grading and batch
        grading's submit and poll (``evaluator.grading.tasks``; every ``grading_interval_s``)
        and escalation (``evaluator.escalation.tasks``), and the compression quality guard
        (``evaluator.compression``; every ``grading_interval_s``)."""
        return [
            grading_job(
                self._sessions,
                self.load_env,
                interval_s=grading_interval_s,
                batch_size=self._batch_size,
                concurrency=self._concurrency,
                lease_s=self._lease_s,
            ),
            *batch_grading_jobs(self._sessions, self.load_env, interval_s=grading_interval_s),
            escalation_job(self._sessions, interval_s=escalation_interval_s, worker=self.worker),
            compression_guard_job(self._sessions, self.load_env, interval_s=grading_interval_s),
        ]
