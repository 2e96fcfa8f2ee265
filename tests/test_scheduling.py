"""Exactly-once scheduling of the escalation job on PostgreSQL (docs/field-cases.md).

One run per tick across workers: two real ``tierwise serve`` processes on one database, ticking
every second: every tick runs once, in one of them, and every class is escalated once per
window. Late and missed runs run once: with the event loop blocked for 5 s across the trigger
the job still runs, once, and a restart after missed ticks runs the
job once and escalates nothing twice. And the last line of defence: with the lock and the tick
bypassed, two concurrent runs still write one event per (class, window).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

import evaluator.escalation._job as escalation_job
from evaluator.escalation import run_escalation
from evaluator.graders import GraderEnv
from evaluator.models import EscalationEvent, JobRun
from evaluator.service import Evaluator
from router.db import make_engine, session_factory
from router.jobs import JobScheduler, tick_of
from router.models import RoutingEntry
from router.policy import builtin_policy_path, parse_policy
from tests.conftest import ROOT, _truncate, apply
from tests.seeding import seed_grades

pytestmark = pytest.mark.asyncio

# Every class graded mechanically, so every class may escalate.
POLICY_TEXT = (
    builtin_policy_path("default").read_text(encoding="utf-8")
    + '\n[[classes]]\nmatch = "*"\ngrader = "exact"\n'
)
POLICY = parse_policy(POLICY_TEXT, source="scheduling test policy")
CLASSES = ("classify", "extract_field", "route_intent")  # trivial: gpt-4o-mini first
LADDER = ("gpt-4o-mini", "claude-3-5-haiku", "claude-3-5-sonnet")


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The session's PostgreSQL database, emptied, with the test policy applied."""
    await _truncate(pg_url)
    engine = make_engine(pg_url)
    sessions = session_factory(engine)
    await apply(sessions, POLICY)
    yield sessions
    await engine.dispose()


async def all_events(sessions: async_sessionmaker[AsyncSession]) -> list[EscalationEvent]:
    async with sessions() as session:
        return list(
            (await session.exec(select(EscalationEvent).order_by(col(EscalationEvent.id)))).all()
        )


async def all_runs(sessions: async_sessionmaker[AsyncSession]) -> list[JobRun]:
    """The escalation job's runs (the data lifecycle's jobs claim their ticks in job_run too)."""
    async with sessions() as session:
        stmt = select(JobRun).where(JobRun.job == "escalation").order_by(col(JobRun.tick))
        return list((await session.exec(stmt)).all())


async def model_of(sessions: async_sessionmaker[AsyncSession], task_class: str) -> str:
    async with sessions() as session:
        row = await session.get(RoutingEntry, task_class)
        assert row is not None
        return row.model


def no_env() -> GraderEnv:
    raise AssertionError("grading is not part of these tests")


# ---- one run per tick across workers: two processes --------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Servers = list[tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture
def two_servers(pg_url: str, tmp_path: Path) -> Iterator[Servers]:
    """Two `tierwise serve` processes on the test database, escalation every second."""
    env = {
        **os.environ,
        "TIERWISE_RUN_SCHEDULER": "true",
        "TIERWISE_ESCALATION_INTERVAL_S": "1",
        "TIERWISE_GRADING_INTERVAL_S": "86400",
        "TIERWISE_LOG_LEVEL": "INFO",
        "TIERWISE_DATASETS_DIR": str(ROOT / "datasets"),
    }
    env.pop("TIERWISE_POLICY_FILE", None)
    procs = []
    for i in range(2):
        log = tmp_path / f"worker{i}.log"
        port = _free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tierwise.cli",
                "serve",
                "--port",
                str(port),
                "--database-url",
                pg_url,
            ],
            cwd=ROOT,
            env={**env, "TIERWISE_SPOOL_DIR": str(tmp_path / f"spool{i}")},  # one per process
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append((proc, log, port))
    try:
        deadline = time.monotonic() + 30
        for proc, log, port in procs:
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield [(proc, log) for proc, log, _ in procs]
    finally:
        for proc, _, _ in procs:
            proc.terminate()
        for proc, _, _ in procs:
            proc.wait(timeout=15)


TICK_LINE = re.compile(r"escalation tick (\S+): (ran|duplicate|locked)")


async def test_two_processes_escalate_once_per_class_and_window(
    pg: async_sessionmaker[AsyncSession],
    two_servers: Servers,
) -> None:
    # Both workers are up and ticking every second; now the evidence arrives, twice.
    for step, model in enumerate(LADDER[:2]):
        for task_class in CLASSES:
            await seed_grades(pg, task_class, model, n=400, k=20)
        deadline = time.monotonic() + 15
        while not all([await model_of(pg, c) == LADDER[step + 1] for c in CLASSES]):
            assert time.monotonic() < deadline, "the escalation job did not run"
            await asyncio.sleep(0.2)
    await asyncio.sleep(2.5)  # a few more ticks in both processes

    events = await all_events(pg)
    assert sorted((e.task_class, e.to_model) for e in events) == sorted(
        (c, m) for c in CLASSES for m in LADDER[1:]
    )
    windows = [(e.task_class, e.window_start, e.to_status) for e in events]
    assert len(windows) == len(set(windows))

    # Every tick ran once, and both processes fired on the same ticks.
    runs = await all_runs(pg)
    assert len({r.tick for r in runs}) == len(runs)
    seen: list[dict[str, str]] = []
    for _, log in two_servers:
        seen.append({m.group(1): m.group(2) for m in TICK_LINE.finditer(log.read_text())})
    both = set(seen[0]) & set(seen[1])
    assert len(both) >= 3, seen
    for tick in both:  # one ran it; the other found it run (or running)
        assert sorted([seen[0][tick], seen[1][tick]]) in (
            ["duplicate", "ran"],
            ["locked", "ran"],
        ), (tick, seen)
    assert {r.tick.isoformat() for r in runs} >= {
        t for s in seen for t, v in s.items() if v == "ran"
    }
    ran_by = {r.worker for r in runs if r.result and r.result["escalated"]}
    assert ran_by  # some run escalated; which worker it was does not matter


async def test_concurrent_runs_in_one_process(
    pg: async_sessionmaker[AsyncSession], pg_url: str
) -> None:
    """Two engines (two connection pools, as two workers have) run the same tick at once."""
    await seed_grades(pg, "classify", "gpt-4o-mini", n=400, k=20)
    other = make_engine(pg_url)
    tick = tick_of(datetime.now(UTC), 3600)
    try:
        a, b = await asyncio.gather(
            run_escalation(pg, tick=tick, worker="a"),
            run_escalation(session_factory(other), tick=tick, worker="b"),
        )
    finally:
        await other.dispose()
    assert sorted([a.skipped, b.skipped]) == [False, True]
    assert (a.escalated or b.escalated) == ["classify"]
    assert len(await all_events(pg)) == 1


async def test_the_unique_constraint_holds_without_lock_and_tick(
    pg: async_sessionmaker[AsyncSession], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock and tick bypassed: both runs decide to escalate; the database keeps one event."""

    async def no_lock(_session: AsyncSession, _name: str) -> bool:
        return True

    monkeypatch.setattr(escalation_job, "try_advisory_lock", no_lock)
    await seed_grades(pg, "classify", "gpt-4o-mini", n=400, k=20)
    other = make_engine(pg_url)
    try:
        a, b = await asyncio.gather(run_escalation(pg), run_escalation(session_factory(other)))
    finally:
        await other.dispose()
    assert sorted([a.escalated, b.escalated]) == [[], ["classify"]]
    assert [b.duplicate, a.duplicate].count(True) == 1
    [event] = await all_events(pg)
    assert (event.to_model, await model_of(pg, "classify")) == (
        "claude-3-5-haiku",
        "claude-3-5-haiku",
    )


# ---- late and missed runs run once -------------------------------------------------------------


async def just_after_tick(interval: float, after: float = 0.1) -> datetime:
    """Sleep until ``after`` s past the next tick of ``interval`` s; return that tick."""
    now = datetime.now(UTC)
    tick = tick_of(now, interval) + timedelta(seconds=interval)
    await asyncio.sleep((tick - now).total_seconds() + after)
    return tick


async def test_a_blocked_loop_still_runs_the_job_once(
    pg: async_sessionmaker[AsyncSession],
) -> None:
    interval = 2.0
    await seed_grades(pg, "classify", "gpt-4o-mini", n=400, k=20)
    await just_after_tick(interval)
    ev = JobScheduler(
        Evaluator(pg, no_env).jobs(grading_interval_s=86400, escalation_interval_s=interval)
    )
    ev.start()
    try:
        await asyncio.sleep(0.5)  # the start-up run for the current tick
        assert len(await all_runs(pg)) == 1
        # Block the event loop from 0.7 s before a trigger for 5 s: triggers at +0.7, +2.7 and
        # +4.7 s pass while it is blocked; the next one is 1.7 s after it unblocks.
        now = datetime.now(UTC)
        next_tick = tick_of(now, interval) + timedelta(seconds=interval)
        if (next_tick - now).total_seconds() < 1.0:
            next_tick += timedelta(seconds=interval)
        await asyncio.sleep((next_tick - now).total_seconds() - 0.7)
        blocked_at = datetime.now(UTC)
        time.sleep(5.0)  # noqa: ASYNC251 (the point of the test: a blocked loop)
        unblocked_at = datetime.now(UTC)
        await asyncio.sleep(0.8)
        late = [r for r in await all_runs(pg) if r.started_at >= blocked_at]
        assert len(late) == 1, late  # the missed triggers ran once, late, not three times
        assert unblocked_at <= late[0].started_at < unblocked_at + timedelta(seconds=0.8)
        # The class was escalated once, by this run or by the tick before the block.
        [event] = await all_events(pg)
        assert event.task_class == "classify"
    finally:
        ev.stop()


async def test_restart_after_missed_ticks_runs_once(
    pg: async_sessionmaker[AsyncSession],
) -> None:
    interval = 2.0
    await seed_grades(pg, "classify", "gpt-4o-mini", n=400, k=20)
    await just_after_tick(interval)
    first = JobScheduler(
        Evaluator(pg, no_env).jobs(grading_interval_s=86400, escalation_interval_s=interval)
    )
    first.start()
    await asyncio.sleep(0.5)
    first.stop()
    before = await all_runs(pg)
    assert len(before) == 1 and (before[0].result or {})["escalated"] == ["classify"]
    # Down for three ticks; back just after the fourth.
    await asyncio.sleep(3 * interval - 0.5)
    await just_after_tick(interval)
    restarted = JobScheduler(
        Evaluator(pg, no_env).jobs(grading_interval_s=86400, escalation_interval_s=interval)
    )
    restarted.start()
    try:
        await asyncio.sleep(0.6)
        after = await all_runs(pg)
        assert len(after) == 2  # one catch-up run, not one per missed tick
        assert (after[1].result or {})["escalated"] == []
        assert len(await all_events(pg)) == 1  # nothing escalated twice
    finally:
        restarted.stop()


async def test_hourly_schedule_after_three_missed_hours(
    pg: async_sessionmaker[AsyncSession],
) -> None:
    """The production schedule: the last run was three hours ago; a restart runs the current
    hour once, and the next run is due at the top of the next hour."""
    await seed_grades(pg, "classify", "gpt-4o-mini", n=400, k=20)
    this_hour = tick_of(datetime.now(UTC), 3600)
    ran = await run_escalation(pg, tick=this_hour - timedelta(hours=3), worker="before")
    assert ran.escalated == ["classify"]
    ev = JobScheduler(
        Evaluator(pg, no_env).jobs(grading_interval_s=86400, escalation_interval_s=3600)
    )
    ev.start()
    try:
        await asyncio.sleep(0.5)
        runs = await all_runs(pg)
        assert [r.tick for r in runs] == [this_hour - timedelta(hours=3), this_hour]
        assert (runs[1].result or {})["escalated"] == []
        assert len(await all_events(pg)) == 1
        assert ev.next_run("escalation") == this_hour + timedelta(hours=1)
    finally:
        ev.stop()


async def test_a_tick_waits_for_a_late_run_of_the_tick_before_it(
    pg: async_sessionmaker[AsyncSession],
) -> None:
    """A catch-up run of the previous tick still holds the lock when this tick fires: this
    tick's run waits for it and then runs, instead of being skipped and lost for an hour."""
    from router.dialect import advisory_lock

    this_hour = tick_of(datetime.now(UTC), 3600)
    async with pg() as holder:
        await advisory_lock(holder, "escalation")  # the late run, still going
        pending = asyncio.create_task(run_escalation(pg, tick=this_hour, worker="next"))
        await asyncio.sleep(0.5)
        assert not pending.done()  # waiting, not skipped
        await holder.commit()  # the late run ends
    run = await asyncio.wait_for(pending, 10)
    assert (run.skipped, run.duplicate) == (False, False)
    assert [r.tick for r in await all_runs(pg)] == [this_hour]
