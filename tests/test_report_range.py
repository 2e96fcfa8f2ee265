"""``tierwise report --since/--until --json`` on SQLite and PostgreSQL: the range narrows the
counts (decisions by their time, grades by the time they were graded) and the JSON carries
them; a bad date is one line naming the option."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner, Result

from evaluator.models import Grade
from router.models import Decision
from router.policy import builtin_policy_path, parse_policy
from tests.conftest import apply
from tests.seeding import seed_grades
from tierwise.cli import app

pytestmark = pytest.mark.asyncio

POLICY = parse_policy(
    builtin_policy_path("default").read_text(encoding="utf-8")
    + '\n[[classes]]\nmatch = "classify*"\ngrader = "exact"\n',
    source="test policy",
)
OLD = datetime(2026, 1, 15, 12, tzinfo=UTC)


async def report(database_url: str, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, app, ["report", *args, "--database-url", database_url]
    )


async def test_the_report_counts_only_its_range(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await apply(sessions, POLICY)
    await seed_grades(sessions, "classify", "gpt-4o-mini", n=6, k=6, decided_at=OLD)
    async with sessions() as session:  # those six were decided and graded on 2026-01-15
        await session.exec(sa.update(Grade).values(created_at=OLD))
        await session.exec(sa.update(Decision).values(created_at=OLD))
        await session.commit()
    await seed_grades(sessions, "classify", "gpt-4o-mini", n=10, k=2)  # now

    def classify(result: Result) -> dict[str, object]:
        assert result.exit_code == 0, result.output
        body = json.loads(result.output)
        [row] = [c for c in body["classes"] if c["task_class"] == "classify"]
        return {"body": body, **row}

    day = classify(await report(database_url, "--since", "2026-01-15", "--until", "2026-01-15",
                                "--json"))  # fmt: skip
    assert (day["routed"], day["graded"]) == (6, 6)
    assert day["body"]["since"] == "2026-01-15T00:00:00+00:00"  # type: ignore[index]
    assert day["body"]["until"] == "2026-01-16T00:00:00+00:00"  # type: ignore[index]
    assert day["body"]["books"]["unpriced_grades"] == 6  # type: ignore[index]
    later = classify(await report(database_url, "--since", "2026-01-16", "--json"))
    assert (later["routed"], later["graded"]) == (10, 10)
    everything = classify(await report(database_url, "--json"))
    assert (everything["routed"], everything["graded"]) == (16, 16)
    assert everything["body"]["since"] is None  # type: ignore[index]
    # The rule's window is the class's (since the policy was applied, now), whatever the range:
    # the ten recent verdicts, two of them disagreements.
    assert (everything["window_n"], everything["window_k"]) == (10, 2)
    assert (day["window_n"], day["window_k"]) == (10, 2)
    assert isinstance(everything["ci_low"], float) and isinstance(everything["status"], str)

    table = await report(database_url, "--until", "2026-01-15")
    assert table.exit_code == 0 and "classify" in table.output
    bad = await report(database_url, "--since", "last tuesday")
    assert bad.exit_code == 2 and "since" in bad.output
    backwards = await report(database_url, "--since", "2026-02-01", "--until", "2026-01-01")
    assert backwards.exit_code == 2 and "is after until" in backwards.output
