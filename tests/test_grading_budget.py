"""The daily grading budget: concurrent reservations admit exactly what fits (one process, and two
processes on PostgreSQL), a reservation settles at the actual cost, a spent budget makes samples
wait (never dropped) until the next UTC day, global and per-class budgets both hold, and a bad
budget value is refused naming its field."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import GRADERS, SampleView, Stage
from evaluator.grading import grade_pending
from evaluator.grading._budget import (
    NANO_PER_USD,
    BudgetHeld,
    GradingBudget,
    estimate_nusd,
    waiting_on_budget,
)
from evaluator.models import GradingBudgetRow
from evaluator.report import books
from router.errors import PolicyError
from router.models import Sample
from router.policy import Policy, builtin_policy_path, parse_policy
from router.pricing import Usage, cost_nusd
from router.table import apply_policy
from tests.conftest import ROOT
from tests.seeding import add_samples
from tests.test_grading_job import env

pytestmark = pytest.mark.asyncio

DAY = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
USER = [{"role": "user", "content": "Write a poem about the sea."}]


def budget_policy(
    global_usd: float | None = None, class_usd: float | None = None, cls: str = "poetry"
) -> Policy:
    """The default policy with a global and/or a per-class grading budget."""
    body = builtin_policy_path("default").read_text(encoding="utf-8")
    if global_usd is not None:
        body = f"grading_budget_usd_per_day = {global_usd!r}\n" + body
    if class_usd is not None:
        body += f'\n[[classes]]\nmatch = "{cls}"\ngrading_budget_usd_per_day = {class_usd!r}\n'
    return parse_policy(body)


async def use(sessions: async_sessionmaker[AsyncSession], policy: Policy) -> None:
    async with sessions() as session:
        await apply_policy(session, policy)
        await session.commit()


async def budget_rows(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[tuple[str, str], tuple[int, int, int]]:
    async with sessions() as session:
        rows = (await session.exec(select(GradingBudgetRow))).all()
    return {
        (r.scope, r.day.isoformat()): (r.limit_nusd, r.reserved_nusd, r.spent_nusd) for r in rows
    }


async def try_reserve(budget: GradingBudget, task_class: str, nusd: int) -> bool:
    try:
        await budget.reserve(task_class, nusd)
    except BudgetHeld:
        return False
    return True


@pytest.mark.parametrize("scope", ["global", "class"])
async def test_concurrent_reservations_admit_exactly_what_fits(
    sessions: async_sessionmaker[AsyncSession], scope: str
) -> None:
    # 1 USD fits three reservations of 0.30 USD; 12 concurrent sessions ask.
    policy = budget_policy(global_usd=1.0) if scope == "global" else budget_policy(class_usd=1.0)
    budget = GradingBudget(sessions, policy, clock=lambda: DAY)
    admitted = await asyncio.gather(
        *(try_reserve(budget, "poetry", 300_000_000) for _ in range(12))
    )
    assert sum(admitted) == 3
    key = ("*" if scope == "global" else "poetry", "2024-06-03")
    assert (await budget_rows(sessions)) == {key: (NANO_PER_USD, 900_000_000, 0)}


async def test_reservations_across_two_processes_admit_exactly_what_fits(
    backend: str, database_url: str
) -> None:
    if backend != "postgresql":
        pytest.skip("two OS processes share a database server only on PostgreSQL")
    # 7 USD fits seven reservations of 1 USD; two processes ask ten times each, concurrently.
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from datetime import UTC, datetime
        from router.db import make_engine, session_factory
        from evaluator.grading._budget import BudgetHeld, GradingBudget
        from tests.test_grading_budget import budget_policy

        async def main() -> None:
            engine = make_engine({database_url!r})
            budget = GradingBudget(
                session_factory(engine), budget_policy(global_usd=7.0, class_usd=100.0),
                clock=lambda: datetime(2024, 6, 3, 12, tzinfo=UTC),
            )
            async def one() -> bool:
                try:
                    await budget.reserve("poetry", 1_000_000_000)
                except BudgetHeld:
                    return False
                return True
            sys.stdin.readline()  # start together
            got = await asyncio.gather(*(one() for _ in range(10)))
            print(json.dumps(sum(got)))
            await engine.dispose()

        asyncio.run(main())
        """
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = await asyncio.wait_for(
        asyncio.gather(*(p.communicate(b"go\n") for p in procs)), timeout=60
    )
    assert all(p.returncode == 0 for p in procs)
    counts = [json.loads(out) for out, _ in outs]
    assert sum(counts) == 7
    from router.db import make_engine, session_factory

    engine = make_engine(database_url)
    rows = await budget_rows(session_factory(engine))
    await engine.dispose()
    assert rows[("*", "2024-06-03")] == (7 * NANO_PER_USD, 7 * NANO_PER_USD, 0)
    assert rows[("poetry", "2024-06-03")] == (100 * NANO_PER_USD, 7 * NANO_PER_USD, 0)


async def test_both_scopes_or_neither_and_settle_at_actual_cost(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    budget = GradingBudget(
        sessions, budget_policy(global_usd=1.0, class_usd=0.5), clock=lambda: DAY
    )
    first = await budget.reserve("poetry", 400_000_000)
    # The global budget has room for 0.6 more, the class's only for 0.1: nothing is reserved.
    assert not await try_reserve(budget, "poetry", 200_000_000)
    # Another class is held by the global budget alone.
    assert await try_reserve(budget, "other", 600_000_000)
    assert not await try_reserve(budget, "other", 1)
    assert (await budget_rows(sessions)) == {
        ("*", "2024-06-03"): (NANO_PER_USD, 1_000_000_000, 0),
        ("poetry", "2024-06-03"): (500_000_000, 400_000_000, 0),
    }
    await budget.settle(first, 123_456_789)
    assert (await budget_rows(sessions)) == {
        ("*", "2024-06-03"): (NANO_PER_USD, 600_000_000, 123_456_789),
        ("poetry", "2024-06-03"): (500_000_000, 0, 123_456_789),
    }
    # What settling freed is admitted again.
    assert await try_reserve(budget, "poetry", 276_543_211)


def stage_costs(policy: Policy) -> tuple[int, int]:
    """(estimate, actual) in nano-USD of grading one USER sample of class poetry with the
    scripted judge of tests/test_grading_job.py (10 input, 5 output tokens)."""
    settings = policy.settings_for("poetry")
    reference = policy.reference_model("poetry")
    view = SampleView("x", "poetry", "claude-3-5-haiku", USER, "A poem.")
    stage = GRADERS[settings.grader].step(view, settings, reference, env(), {})
    assert isinstance(stage, Stage)
    price = policy.prices[reference]
    estimate = sum(estimate_nusd(r, price) for r in stage.requests.values())
    actual = cost_nusd(Usage(10, 0, 0, 5, 0), price) or 0
    return estimate, actual


async def seed(sessions: async_sessionmaker[AsyncSession], ids: list[str], cls: str) -> None:
    async with sessions() as session:
        add_samples(
            session,
            ids,
            task_class=cls,
            model="claude-3-5-haiku",
            at=DAY,
            messages=USER,
            output_text="A poem.",
        )
        await session.commit()


@pytest.mark.parametrize("scope", ["global", "class"])
async def test_a_spent_budget_makes_samples_wait_until_the_next_day(
    sessions: async_sessionmaker[AsyncSession], scope: str
) -> None:
    estimate, actual = stage_costs(budget_policy())
    assert estimate > actual  # an upper bound
    limit = (estimate + actual) / NANO_PER_USD  # fits two samples one after the other
    policy = (
        budget_policy(global_usd=limit) if scope == "global" else budget_policy(class_usd=limit)
    )
    await use(sessions, policy)
    await seed(sessions, ["s-1", "s-2", "s-3"], "poetry")
    await seed(sessions, ["o-1"], "other")  # unlimited on a class budget, held on a global one

    now = DAY
    run = await grade_pending(sessions, env(), concurrency=1, clock=lambda: now)
    held = 1 if scope == "class" else 2
    assert (run.claimed, run.graded, run.budget_held, run.failed) == (4, 4 - held, held, 0)
    async with sessions() as session:
        rows = {s.decision_id: s for s in (await session.exec(select(Sample))).all()}
        assert await waiting_on_budget(session, now=now) == held
        assert (await books(session, now=now)).waiting_on_budget == held
    waiting = [d for d, s in rows.items() if s.status == "queued"]
    assert len(waiting) == held and "s-3" in waiting
    for d in waiting:  # not dropped, no attempt used up, back on the next UTC day
        assert rows[d].attempts == 0
        assert rows[d].lease_until == datetime(2024, 6, 4, tzinfo=UTC)
    scope_key = ("*" if scope == "global" else "poetry", "2024-06-03")
    limit_n, reserved, spent = (await budget_rows(sessions))[scope_key]
    assert (reserved, spent) == (0, 2 * actual)
    assert spent + estimate > limit_n

    # Later the same day: still waiting, nothing claimed.
    now = DAY + timedelta(hours=11)
    assert (await grade_pending(sessions, env(), clock=lambda: now)).claimed == 0

    # The next UTC day: a fresh budget, graded.
    now = datetime(2024, 6, 4, 0, 1, tzinfo=UTC)
    run = await grade_pending(sessions, env(), concurrency=1, clock=lambda: now)
    assert (run.claimed, run.graded, run.budget_held) == (held, held, 0)
    async with sessions() as session:
        status = dict((await session.exec(select(Sample.decision_id, Sample.status))).all())
        assert await waiting_on_budget(session, now=now) == 0
    assert set(status.values()) == {"graded"}
    assert (await budget_rows(sessions))[(scope_key[0], "2024-06-04")][1:] == (0, held * actual)


async def test_no_budget_touches_no_table(sessions: async_sessionmaker[AsyncSession]) -> None:
    await use(sessions, budget_policy())
    await seed(sessions, ["s-1", "s-2"], "poetry")
    run = await grade_pending(sessions, env())
    assert (run.graded, run.budget_held) == (2, 0)
    assert await budget_rows(sessions) == {}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda b: "grading_budget_usd_per_day = -1.0\n" + b, "grading_budget_usd_per_day"),
        (lambda b: 'grading_budget_usd_per_day = "ten"\n' + b, "grading_budget_usd_per_day"),
        (
            lambda b: b.replace("[defaults]\n", "[defaults]\ngrading_budget_usd_per_day = -2\n"),
            "defaults.grading_budget_usd_per_day",
        ),
        (
            lambda b: b + '\n[[classes]]\nmatch = "x"\ngrading_budget_usd_per_day = 1e9\n',
            "grading_budget_usd_per_day",
        ),
    ],
)
async def test_a_bad_budget_is_refused_naming_the_field(edit: object, field: str) -> None:
    body = builtin_policy_path("default").read_text(encoding="utf-8")
    assert callable(edit)
    with pytest.raises(PolicyError) as err:
        parse_policy(edit(body))
    assert field in str(err.value)
