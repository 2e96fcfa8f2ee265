"""``/readyz``: may this process take traffic? Each check says what it saw and whether it
passes; any failing check makes the answer 503, with the JSON error shape naming the first.

Checks (thresholds from settings):

- ``database``: ``SELECT 1`` answers within ``db_connect_timeout_s`` (at most 2 s), no part of
  the process is failing its database calls (:class:`router.health.DatabaseHealth`), and the
  decision writer is not spooling.
- ``snapshot``: a routing policy is applied and the table version was last read less than
  ``ready_snapshot_max_age_s`` ago.
- ``spool``: rows in memory and on disk; fails when the spool is full (requests that need it
  are refused).
- ``jobs``: no scheduled job is more than ``ready_max_job_lag_s`` behind (each job's lag: time
  since its last good run less its interval); passes when this process runs no jobs.
- ``reference_provider``: the last grading run did not fail every call to the reference model
  (some provider errors and nothing graded).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from router.health import DatabaseHealth, one_line
from router.jobs import JobScheduler
from router.service import Router
from tierwise.settings import Settings


@dataclass
class Check:
    """One check's verdict and what it saw."""

    ok: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.values}


async def _database(
    engine: AsyncEngine, health: DatabaseHealth, router: Router, timeout_s: float
) -> Check:
    failing = health.failing()
    try:
        async with asyncio.timeout(timeout_s):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to answer is "not reachable", said in one line
        return Check(False, f"not reachable: {one_line(exc)}", {"failing": failing})
    if router.writer.spooling:
        return Check(
            False,
            "reachable, but writes are failing or the spool is still being written back",
            {"failing": failing},
        )
    if failing:
        names = ", ".join(sorted(failing))
        return Check(False, f"reachable, but failing for {names}", {"failing": failing})
    return Check(True, "reachable")


def _snapshot(router: Router, max_age_s: float) -> Check:
    if router.table_version is None:
        return Check(False, "no routing policy applied yet: run `tierwise policy apply FILE`")
    checked = router.snapshot_checked_at
    age = None if checked is None else round(time.monotonic() - checked, 3)
    values = {"table_version": router.table_version, "age_s": age}
    if age is None or age > max_age_s:
        return Check(False, f"table version last read {age} s ago (limit {max_age_s:g} s)", values)
    return Check(True, f"table version {router.table_version}, read {age} s ago", values)


def _spool(router: Router) -> Check:
    writer = router.writer
    spool = writer.spool
    values: dict[str, Any] = {
        "buffered_rows": writer.depth,
        "spooled_rows": writer.spooled,
        "spooled_bytes": 0 if spool is None else spool.size,
        "max_bytes": 0 if spool is None else spool.max_bytes,
    }
    if spool is not None and not spool.room():
        return Check(False, f"spool full ({spool.size} of {spool.max_bytes} bytes)", values)
    return Check(True, f"{writer.spooled} rows spooled", values)


def _jobs(scheduler: JobScheduler | None, max_lag_s: float) -> Check:
    if scheduler is None:
        return Check(True, "no jobs run in this process")
    lags = {job.name: round(scheduler.lag_s(job), 3) for job in scheduler.jobs}
    late = {name: lag for name, lag in lags.items() if lag > max_lag_s}
    if late:
        names = ", ".join(f"{n} {lag:g} s" for n, lag in sorted(late.items()))
        return Check(False, f"jobs behind by more than {max_lag_s:g} s: {names}", {"lag_s": lags})
    return Check(True, "every job on time", {"lag_s": lags})


def _reference_provider(scheduler: JobScheduler | None) -> Check:
    last = None if scheduler is None else scheduler.last_result.get("grading")
    errors = getattr(last, "provider_errors", 0)
    graded = getattr(last, "graded", 0)
    values = {"last_run_provider_errors": errors, "last_run_graded": graded}
    if errors and not graded:
        return Check(
            False, f"the last grading run had {errors} provider errors and graded nothing", values
        )
    return Check(
        True, "no failing grading run" if last is not None else "no grading run yet", values
    )


async def readiness(
    settings: Settings,
    engine: AsyncEngine,
    router: Router,
    health: DatabaseHealth,
    scheduler: JobScheduler | None,
) -> dict[str, Check]:
    """Every check, by name (see the module doc)."""
    timeout_s = min(2.0, settings.db_connect_timeout_s)
    return {
        "database": await _database(engine, health, router, timeout_s),
        "snapshot": _snapshot(router, settings.ready_snapshot_max_age_s),
        "spool": _spool(router),
        "jobs": _jobs(scheduler, settings.ready_max_job_lag_s),
        "reference_provider": _reference_provider(scheduler),
    }
