"""`tierwise replay … --lane batch`: the recorded traffic through the gateway's batch lane (the
replay provider in batch mode) ends with the decisions, samples and verdicts of the real-time
gateway run, and its books show the discount: each answer costs half (the catalog's
batch_discount of 0.5) on the same routed models."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sqlmodel import select
from typer.testing import CliRunner

from evaluator.models import Grade
from router.db import make_engine, session_factory
from router.models import Decision, LaneItem, Outcome
from tests.conftest import DATASETS
from tierwise.cli import app

SERVING = re.compile(r"serving cost:\s+\$([\d,.]+)")


async def _rows(url: str) -> tuple[dict[str, str], dict[str, Outcome], dict[str, str], int]:
    engine = make_engine(url)
    try:
        async with session_factory(engine)() as session:
            decisions = {d.id: d.model for d in (await session.exec(select(Decision))).all()}
            outcomes = {o.decision_id: o for o in (await session.exec(select(Outcome))).all()}
            grades = {g.decision_id: g.verdict for g in (await session.exec(select(Grade))).all()}
            items = len((await session.exec(select(LaneItem))).all())
    finally:
        await engine.dispose()
    return decisions, outcomes, grades, items


def test_the_batch_lane_replay_ends_like_the_gateway_run_at_half_the_serving_cost(
    tmp_path: Path,
) -> None:
    runs = {}
    for lane in ("realtime", "batch"):
        url = f"sqlite+aiosqlite:///{tmp_path / f'{lane}.db'}"
        args = ["replay", str(DATASETS / "mt_bench.jsonl"), str(DATASETS / "gsm8k.jsonl")]
        args += ["--per-class", "120", "--via", "gateway", "--lane", lane, "--database-url", url]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[lane] = (result.output, asyncio.run(_rows(url)))
    (rt_out, (rt_decisions, rt_outcomes, rt_grades, rt_items)) = runs["realtime"]
    (b_out, (b_decisions, b_outcomes, b_grades, b_items)) = runs["batch"]
    assert (rt_items, b_items) == (0, len(b_decisions))
    assert b_decisions == rt_decisions  # the same routed models
    assert b_grades == rt_grades and rt_grades  # the same samples, the same verdicts
    for decision_id, outcome in rt_outcomes.items():
        batch = b_outcomes[decision_id]
        assert (batch.input_tokens, batch.output_tokens) == (
            outcome.input_tokens,
            outcome.output_tokens,
        )
        assert outcome.cost_nusd is not None and batch.cost_nusd is not None
        # Half, rounded half to even once per row (router.money): within half a nano-USD.
        assert abs(batch.cost_nusd * 2 - outcome.cost_nusd) <= 1, decision_id
    rt_cost = float(SERVING.findall(rt_out)[0].replace(",", ""))
    b_cost = float(SERVING.findall(b_out)[0].replace(",", ""))
    assert rt_cost > 0 and abs(b_cost - rt_cost / 2) <= 0.0001


def test_replay_refuses_an_unknown_lane(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    args = ["replay", str(DATASETS / "gsm8k.jsonl"), "--lane", "slow", "--database-url", url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "--lane must be realtime or batch" in result.output
