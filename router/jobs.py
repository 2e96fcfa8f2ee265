"""Scheduled jobs: how a domain declares one, and the scheduler that runs a list of them.

Each domain declares its jobs next to its code (``evaluator.grading.tasks``,
``evaluator.escalation.tasks``) as :class:`Job` values; the composition root hands every plane's
list to one :class:`JobScheduler`, in the API process (embedded default) or in ``tierwise
worker`` (a process that runs the jobs without serving HTTP, so routers and workers scale apart).
This module lives in the data plane so that both planes can declare jobs.

The scheduler is APScheduler's ``AsyncIOScheduler`` with UTC interval triggers aligned to the
epoch: an hourly job ticks at the top of every hour in every worker, so every worker computes
the same tick (:func:`tick_of`). Every job has ``coalesce=True`` (missed runs collapse into one)
and ``max_instances=1``. A job that runs once per tick across workers (``once_per_tick``) has no
misfire grace (``misfire_grace_time=None``): a run delayed by a blocked event loop still happens,
once; with ``catch_up`` it also runs once at start-up for the current tick, so a restart after
downtime catches up once, not once per missed tick. Such a job's ``run`` claims its tick itself
(an advisory lock and a ``job_run`` row: ``evaluator.escalation``), so one worker runs each tick.
Other jobs get a misfire grace of one interval.

A run that fails because the database is unreachable is reported to the process's
:class:`~router.health.DatabaseHealth` (one line per outage) instead of a traceback per run;
:meth:`JobScheduler.lag_s` says how far behind each job is (``/readyz``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from router.health import DatabaseHealth, is_connection_error

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_of(at: datetime, interval_s: float) -> datetime:
    """The start of the UTC interval (``interval_s`` seconds) holding ``at``: intervals are
    aligned to the epoch, so every worker computes the same tick."""
    seconds = (at - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=(seconds // interval_s) * interval_s)


@dataclass(frozen=True, slots=True)
class Job:
    """A scheduled job as its domain declares it.

    ``run`` is called with the job's tick (UTC, aligned to the epoch) every ``interval_s``
    seconds and returns what the run did (logged). ``once_per_tick``: the run claims its tick
    across workers, so it is never dropped for lateness; ``catch_up``: also run once at start-up.
    """

    name: str
    run: Callable[[datetime], Awaitable[object]]
    interval_s: float
    once_per_tick: bool = False
    catch_up: bool = False

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"job {self.name}: interval_s must be > 0")


class JobScheduler:
    """Runs a list of :class:`Job` on one event loop (see the module doc for the rules)."""

    def __init__(self, jobs: Sequence[Job], *, health: DatabaseHealth | None = None) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate job names: {names}")
        self.jobs = list(jobs)
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()
        self._runs: dict[str, Counter[str]] = {j.name: Counter() for j in jobs}
        self._last_ok: dict[str, float] = {}
        self._started = time.time()
        self._health = health
        self._started_at: datetime | None = None
        self.last_ok: dict[str, datetime] = {}
        """Job name -> when its last run that did not fail ended (UTC)."""
        self.last_result: dict[str, object] = {}
        """Job name -> what its last run that did not fail returned."""

    def lag_s(self, job: Job, now: datetime | None = None) -> float:
        """How late ``job`` is, s: the time since its last good run ended (or the scheduler
        started) less one interval, never below 0; 0 while the scheduler is not running."""
        since = self.last_ok.get(job.name, self._started_at)
        if since is None:
            return 0.0
        late = ((now or datetime.now(UTC)) - since).total_seconds() - job.interval_s
        return max(0.0, late)

    async def _tick(self, job: Job) -> object:
        tick = tick_of(datetime.now(UTC), job.interval_s)
        task: asyncio.Task[object] = asyncio.ensure_future(job.run(tick))
        self._running.add(task)
        try:
            result = await asyncio.shield(task)
        except Exception as exc:
            self._runs[job.name]["error"] += 1
            if self._health is None or not is_connection_error(exc):
                raise
            self._health.failed("jobs", exc)  # said once per outage
            return None
        finally:
            if task.done():
                self._running.discard(task)
        self._runs[job.name]["ok"] += 1
        self._last_ok[job.name] = time.time()
        self.last_ok[job.name] = datetime.now(UTC)
        self.last_result[job.name] = result
        if self._health is not None:
            self._health.ok("jobs")
        log.debug("job %s tick %s: %s", job.name, tick.isoformat(), result)
        return result

    def job_stats(self) -> list[tuple[str, float, Counter[str], float | None, float]]:
        """Per job: name, interval (s), runs by result (``ok``, ``error``), Unix time of its last
        good run (None before one), Unix time the scheduler started (``router.metrics``)."""
        return [
            (j.name, j.interval_s, self._runs[j.name], self._last_ok.get(j.name), self._started)
            for j in self.jobs
        ]

    def start(self) -> None:
        """Start the scheduler on the running event loop."""
        self._started = time.time()
        scheduler = AsyncIOScheduler(timezone="UTC")
        common = {"coalesce": True, "max_instances": 1, "replace_existing": True}
        for job in self.jobs:
            scheduler.add_job(
                self._tick,
                IntervalTrigger(seconds=job.interval_s, start_date=EPOCH, timezone="UTC"),
                args=[job],
                id=job.name,
                misfire_grace_time=None if job.once_per_tick else max(1, int(job.interval_s)),
                **common,
            )
            if job.catch_up:
                # A job of its own, so the interval job keeps its epoch-aligned ticks.
                scheduler.add_job(
                    self._tick,
                    DateTrigger(run_date=datetime.now(UTC), timezone="UTC"),
                    args=[job],
                    id=f"{job.name}-catch-up",
                    misfire_grace_time=None,
                    **common,
                )
        scheduler.start()
        self._scheduler = scheduler
        self._started_at = datetime.now(UTC)

    def next_run(self, name: str) -> datetime | None:
        """When job ``name`` runs next (UTC); None when not scheduled."""
        job = self._scheduler.get_job(name) if self._scheduler is not None else None
        return None if job is None else job.next_run_time

    def stop(self) -> None:
        """Stop scheduling; a run in progress goes on (:meth:`aclose` waits for it)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def aclose(self, *, timeout_s: float = 30.0) -> None:
        """Stop scheduling and wait up to ``timeout_s`` s for runs in progress to finish (a run
        is one transaction: it commits or rolls back whole), then cancel what is left."""
        self.stop()
        running = [t for t in self._running if not t.done()]
        if not running:
            return
        log.info("waiting for %d running job(s) to finish", len(running))
        done, late = await asyncio.wait(running, timeout=timeout_s)
        for task in done:  # their scheduler wrapper is gone: say how they ended here
            if not task.cancelled() and task.exception() is not None:
                log.error("a job run failed during shutdown", exc_info=task.exception())
        for task in late:
            log.warning("a job run outlived the %g s shutdown wait; cancelled", timeout_s)
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        self._running.clear()
