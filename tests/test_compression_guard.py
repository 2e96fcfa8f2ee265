"""The compression quality guard on real parts: probes queued through the stage's store, graded
by the class's grader against answers from a loopback OpenAI upstream (``tests/wire.py``), and
the sequential rule stepping a class's compression back (and forward only on evidence), on
SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.compression import grade_probes, run_guard
from evaluator.service import provider_env
from evaluator.stats import wilson
from router.compression.models import CompressionEvent, CompressionProbe, CompressionState
from router.compression.stage import ratio_at
from router.compression.store import CompressionStore
from router.policy import parse_policy
from router.providers import OpenAIProvider
from tests.conftest import apply
from tests.test_compression_gateway import qa_messages
from tests.test_gateway import POLICY
from tests.wire import OPENAI_PATH, Reply, WireServer, openai_chat

GUARD_POLICY = (
    POLICY
    + """
[[rules]]
task_types = ["qa"]
tier = "standard"

[[classes]]
match = "qa"
grader = "exact"
compression = ["redundancy", "query"]
compression_ratio = 0.5
compression_min_tokens = 0
# a coarse rule, so a test needs tens of verdicts, not hundreds
threshold = 0.2
p0 = 0.1
p1 = 0.3
lower_level = 0.05
deescalate_windows = 1
window_hours = 1
"""
)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


def _probe(i: int, at: datetime, *, level: int, trial: bool = False) -> dict[str, Any]:
    return {
        "decision_id": f"dec-{at:%H%M}-{level}-{int(trial)}-{i:04d}",
        "task_class": "qa",
        "model": "small",
        "level": level,
        "ratio": ratio_at(0.5, level),
        "pipeline": ["redundancy", "query"],
        "guard": False,
        "trial": trial,
        "input_messages": qa_messages(),
        "output_text": None if trial else "Wilhelm Conrad Röntgen",
        "status": "queued",
        "attempts": 0,
        "grade_input_tokens": 0,
        "grade_output_tokens": 0,
        "created_at": at + timedelta(seconds=i),
    }


async def _queue_and_grade(
    sessions: async_sessionmaker[AsyncSession],
    wire: WireServer,
    verdicts: list[bool],
    at: datetime,
    *,
    level: int,
    trial: bool = False,
) -> None:
    """Queue one probe per verdict (True = the uncompressed answer disagrees) through the
    store, script the upstream's answers in order, and grade them."""
    store = CompressionStore(sessions)
    for i, disagree in enumerate(verdicts):
        store.probe(_probe(i, at, level=level, trial=trial))
        if trial:  # the compressed answer the job asks for first
            wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("Wilhelm Conrad Röntgen")))
        answer = "Max Planck" if disagree else "Wilhelm Conrad Röntgen"
        wire.enqueue(OPENAI_PATH, Reply(body=openai_chat(answer)))
    await store.sync()
    provider = OpenAIProvider(
        api_key=SecretStr("sk-test"), base_url=wire.openai_base_url, max_retries=0
    )
    env = provider_env(lambda model: provider)
    graded = await grade_probes(sessions, env, limit=len(verdicts))
    assert (graded.graded, graded.failed, graded.retried) == (len(verdicts), 0, 0)
    # every call priced at the catalog: small is 0.15 / 0.60 USD per 1M (100 in, 20 out)
    calls = len(verdicts) * (2 if trial else 1)
    assert graded.cost_nusd == calls * (100 * 150 + 20 * 600)


async def _events(sessions: async_sessionmaker[AsyncSession]) -> list[CompressionEvent]:
    async with sessions() as session:
        stmt = select(CompressionEvent).order_by(col(CompressionEvent.id))
        return list((await session.exec(stmt)).all())


async def _state(sessions: async_sessionmaker[AsyncSession]) -> CompressionState | None:
    async with sessions() as session:
        return await session.get(CompressionState, "qa")


async def test_a_seeded_stream_of_disagreements_steps_compression_back_and_records_it(
    sessions: async_sessionmaker[AsyncSession], wire: WireServer
) -> None:
    await apply(sessions, parse_policy(GUARD_POLICY))
    rng = random.Random(20260302)
    verdicts = [rng.random() < 0.3 for _ in range(60)]
    k = sum(verdicts)
    await _queue_and_grade(sessions, wire, verdicts, T0, level=0)
    done = await run_guard(sessions, at=T0 + timedelta(minutes=5))
    assert len(done.events) == 1
    assert done.decisions["qa"].action == "escalate"
    est = wilson(k, 60)
    stored = (await _events(sessions))[0]
    assert (stored.task_class, stored.from_level, stored.to_level) == ("qa", 0, 1)
    assert (stored.from_ratio, stored.to_ratio) == (0.5, 0.75)
    assert (stored.n, stored.k, stored.rate) == (60, k, k / 60)
    assert (stored.ci_low, stored.ci_high) == (est.ci_low, est.ci_high)
    assert stored.rule.startswith("bernoulli-cusum(p0=0.1, p1=0.3")
    assert stored.reason.startswith("compression policy -> gentler: ")
    assert stored.evidence["action"] == "escalate"
    assert stored.evidence["rule_state"]["k"] == k
    state = await _state(sessions)
    assert state is not None and state.level == 1
    async with sessions() as session:
        probes = (await session.exec(select(CompressionProbe))).all()
    assert {p.status for p in probes} == {"counted"}
    assert sum(p.verdict == "disagree" for p in probes) == k
    # The stage reads the new level on its next sync: the class now compresses at 0.75.
    store = CompressionStore(sessions)
    await store.sync()
    assert store.level("qa") == 1

    # The same again at the gentler ratio: compression goes off.
    await _queue_and_grade(sessions, wire, verdicts, T0 + timedelta(hours=1), level=1)
    done = await run_guard(sessions, at=T0 + timedelta(hours=1, minutes=5))
    assert [(e.from_level, e.to_level, e.to_ratio) for e in done.events] == [(1, 2, None)]
    assert (await _state(sessions)).level == 2  # type: ignore[union-attr]
    assert len(await _events(sessions)) == 2


async def test_agreement_leaves_compression_on_and_writes_no_event(
    sessions: async_sessionmaker[AsyncSession], wire: WireServer
) -> None:
    await apply(sessions, parse_policy(GUARD_POLICY))
    await _queue_and_grade(sessions, wire, [False] * 40, T0, level=0)
    done = await run_guard(sessions, at=T0 + timedelta(minutes=5))
    assert done.events == []
    assert done.decisions["qa"].action == "hold"
    state = await _state(sessions)
    assert state is not None and state.level == 0 and state.rule_state["n"] == 40


async def test_compression_comes_back_only_on_trial_evidence(
    sessions: async_sessionmaker[AsyncSession], wire: WireServer
) -> None:
    await apply(sessions, parse_policy(GUARD_POLICY))
    async with sessions() as session:
        session.add(CompressionState(task_class="qa", level=2, changed_at=T0, updated_at=T0))
        await session.commit()
    # Trials of level 1 (the gentler ratio), all agreeing, in one window: not yet enough.
    await _queue_and_grade(sessions, wire, [False] * 40, T0, level=1, trial=True)
    done = await run_guard(sessions, at=T0 + timedelta(minutes=30))
    assert done.events == []
    # The next window closes the first (at or below the lower level): one step forward.
    await _queue_and_grade(
        sessions, wire, [False] * 5, T0 + timedelta(hours=1), level=1, trial=True
    )
    done = await run_guard(sessions, at=T0 + timedelta(hours=1, minutes=30))
    assert [(e.from_level, e.to_level, e.to_ratio) for e in done.events] == [(2, 1, 0.75)]
    assert done.events[0].evidence["action"] == "deescalate"
    state = await _state(sessions)
    assert state is not None and state.level == 1
