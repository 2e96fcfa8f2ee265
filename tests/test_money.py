"""Exact money and price history, on SQLite and PostgreSQL: integer nano-USD sums, dated price
rows, an outcome priced at the price of its decision's time, ``tierwise prices``."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from evaluator.costs import costs
from evaluator.report import books
from router import repository
from router.db import utcnow
from router.errors import PolicyError
from router.models import Decision, Outcome
from router.money import price_usd
from router.outcomes import OutcomeReport, record_outcomes
from router.policy import builtin_policy_path, parse_policy
from router.pricing import Usage, cost_nusd
from router.table import apply_policy, load_snapshot
from tierwise.cli import app

BASE = builtin_policy_path("default").read_text(encoding="utf-8")
MINI = "input_usd_per_mtok = 0.15"


def _policy(input_price: str, extra: str = "") -> str:
    """default.toml with gpt-4o-mini's input price (and optional lines after it) replaced."""
    assert BASE.count(MINI) == 1
    return BASE.replace(MINI, f"input_usd_per_mtok = {input_price}{extra}")


def _decision(did: str, at: object, model: str = "gpt-4o-mini") -> dict[str, object]:
    return {
        "id": did,
        "task_type": "classify",
        "task_class": "classify",
        "tier": "trivial",
        "model": model,
        "provider": "openai",
        "table_version": 1,
        "sampled": False,
        "input_tokens": 1,
        "has_tool_calls": False,
        "created_at": at,
    }


async def test_a_sum_over_many_rows_equals_the_sum_of_their_costs_exactly(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # 1 token at 1.5 USD per 1M is 0.0000015 USD = 1,500 nano-USD, exactly; 100,000 of them sum
    # to exactly 0.15 USD (a float sum of 1.5e-06 would not).
    policy = parse_policy(BASE.replace("input_usd_per_mtok = 2.50", "input_usd_per_mtok = 1.5"))
    price = policy.prices["gpt-4o"]
    each = cost_nusd(Usage(input_tokens=1), price)
    assert each == 1500
    n, at = 100_000, utcnow()
    async with sessions() as session:
        await apply_policy(session, policy)
        await session.commit()
    async with sessions() as session:
        conn = await session.connection()
        await conn.execute(
            sa.insert(Decision), [_decision(f"d{i}", at, "gpt-4o") for i in range(n)]
        )
        await conn.execute(
            sa.insert(Outcome),
            [
                {
                    "decision_id": f"d{i}",
                    "task_class": "classify",
                    "served_model": "gpt-4o",
                    "status": "ok",
                    "input_tokens": 1,
                    "cost_nusd": each,
                    "decided_at": at,
                    "created_at": at,
                }
                for i in range(n)
            ],
        )
        await session.commit()
    async with sessions() as session:
        report = await costs(session)
        the_books = await books(session)
    assert report.totals.serving_nusd == n * each == 150_000_000
    assert report.totals.serving_usd == 0.15
    assert report.to_dict()["totals"]["serving_usd"] == 0.15
    assert the_books.serving_nusd == 150_000_000 and the_books.serving_usd == 0.15
    # The counterfactual: the same 100,000 tokens at the premium model's 3.00 per 1M, exactly.
    assert report.totals.counterfactual_nusd == 300_000_000
    assert report.totals.savings_nusd == 150_000_000


async def _outcome(session: AsyncSession, did: str, decided_at: object, tokens: int) -> int | None:
    snapshot = await load_snapshot(session)
    assert snapshot is not None
    await repository.insert_decisions(session, [_decision(did, decided_at)])
    report = OutcomeReport(
        decision_id=did,
        served_model="gpt-4o-mini",
        status="ok",
        latency_ms=None,
        usage={"prompt_tokens": tokens, "completion_tokens": 0},
        input_messages=None,
        output_text=None,
    )
    (result,) = await record_outcomes(session, snapshot, [report], buffered=lambda ids: {})
    await session.commit()
    return result.cost_nusd


async def test_a_price_change_adds_a_row_and_old_outcomes_keep_their_cost(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    async with sessions() as session:
        first = await apply_policy(session, parse_policy(BASE))
        await session.commit()
    assert "gpt-4o-mini" in first.repriced
    before = utcnow()
    async with sessions() as session:
        # 1,000,000 input tokens at 0.15 USD per 1M.
        assert await _outcome(session, "old", before, 1_000_000) == 150_000_000
    async with sessions() as session:
        again = await apply_policy(session, parse_policy(BASE))  # same prices: no new row
        changed = await apply_policy(session, parse_policy(_policy("0.20")))
        await session.commit()
    assert again.repriced == [] and changed.repriced == ["gpt-4o-mini"]
    async with sessions() as session:
        assert await _outcome(session, "new", utcnow(), 1_000_000) == 200_000_000
        # A decision taken before the change is priced at the price of its time.
        assert await _outcome(session, "late", before, 1_000_000) == 150_000_000
        rows = [(o.decision_id, o.cost_nusd) for o in (await session.exec(select(Outcome))).all()]
        snapshot = await load_snapshot(session)
    assert dict(rows) == {"old": 150_000_000, "new": 200_000_000, "late": 150_000_000}
    assert snapshot is not None
    assert snapshot.catalog["gpt-4o-mini"].input_usd_per_mtok == Decimal("0.2")

    args = ["prices", "gpt-4o-mini", "--json", "--database-url", database_url]
    out = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert out.exit_code == 0, out.output
    history = json.loads(out.output)
    assert [(r["model"], r["input_usd_per_mtok"]) for r in history] == [
        ("gpt-4o-mini", "0.15"),
        ("gpt-4o-mini", "0.2"),
    ]
    assert history[0]["effective_from"].startswith("1970-01-01")
    table = await asyncio.to_thread(
        CliRunner().invoke, app, ["prices", "--database-url", database_url]
    )
    assert table.exit_code == 0 and "gpt-4o-mini" in table.output


async def test_a_dated_price_applies_from_its_date_and_a_past_date_is_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await apply_policy(session, parse_policy(BASE))
        await session.commit()
    soon = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    dated = _policy("0.30", f"\neffective_from = {soon.isoformat().replace('+00:00', 'Z')}")
    async with sessions() as session:
        await apply_policy(session, parse_policy(dated))
        await session.commit()
    async with sessions() as session:
        snapshot = await load_snapshot(session)
    assert snapshot is not None
    assert snapshot.catalog["gpt-4o-mini"].input_usd_per_mtok == Decimal("0.15")  # not yet
    later = snapshot.price_at("gpt-4o-mini", soon + timedelta(seconds=1))
    assert later is not None and later.input_usd_per_mtok == Decimal("0.3")
    past = _policy("0.40", "\neffective_from = 2020-01-01")
    async with sessions() as session:
        with pytest.raises(PolicyError, match="in the past") as exc:
            await apply_policy(session, parse_policy(past))
    assert exc.value.field is not None and exc.value.field.endswith("effective_from")


def test_a_price_with_more_than_nine_decimals_is_refused() -> None:
    with pytest.raises(PolicyError, match="more than 9 decimals"):
        parse_policy(_policy("0.1500000001"))


def test_prices_print_as_plain_decimals() -> None:
    assert [str(price_usd(n)) for n in (10_000_000_000, 100_000_000_000, 150_000_000)] == [
        "10",
        "100",
        "0.15",
    ]
