"""`tierwise worker`: the scheduled jobs run in a process that serves no HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from sqlmodel import select

from evaluator.models import EscalationEvent, JobRun
from router.db import make_engine, session_factory
from router.models import RoutingEntry
from router.policy import parse_policy
from tests.conftest import ROOT, apply, make_settings, policy_named
from tests.seeding import seed_grades
from tierwise.planes import run_worker


async def test_the_worker_runs_the_jobs_and_escalates(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    # An exact-match grader needs no judge calibration, so the class may escalate.
    body = policy_named("default").body + '\n[[classes]]\nmatch = "classify"\ngrader = "exact"\n'
    await apply(sessions, parse_policy(body))
    await seed_grades(sessions, "classify", "gpt-4o-mini", n=400, k=20)
    settings = make_settings(
        database_url, run_scheduler=True, escalation_interval_s=3600, grading_interval_s=3600
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        deadline = time.monotonic() + 20
        while True:  # the catch-up run for the current tick escalates the class
            async with sessions() as session:
                entry = await session.get(RoutingEntry, "classify")
                runs = (await session.exec(select(JobRun))).all()
            if entry is not None and entry.status == "escalated":
                break
            assert time.monotonic() < deadline, "the worker did not escalate"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
    async with sessions() as session:
        [event] = (await session.exec(select(EscalationEvent))).all()
    await engine.dispose()
    assert (event.task_class, event.to_model, event.actor) == (
        "classify",
        "claude-3-5-haiku",
        "escalation-job",
    )
    # The lifecycle jobs (text retention, partitions) run on their own ticks beside it.
    assert [r.job for r in runs if r.job not in ("text-retention", "partitions")] == ["escalation"]


def test_tierwise_worker_stops_cleanly_on_sigterm(tmp_path: object) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/worker.db"
    env = {**os.environ, "TIERWISE_DATASETS_DIR": str(ROOT / "datasets")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise.cli", "worker", "--database-url", db],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        seen = b""
        assert proc.stdout is not None
        while b"worker running jobs" not in seen:
            assert proc.poll() is None and time.monotonic() < deadline, seen.decode()
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (seen + out).decode()
    assert (
        b"grading every 30 s, batch-submit every 30 s, batch-poll every 30 s, "
        b"escalation every 3600 s" in seen
    )
    assert b"worker stopping" in out
