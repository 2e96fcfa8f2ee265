"""`tierwise replay … --grading batch`: every class graded through the replay provider's batch
mode (the submit and poll jobs at each tick) ends where the real-time run does, at half the
grading spend on the same samples (the catalog's batch_discount of 0.5), and the report states
the time from sample to verdict per grading mode."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from evaluator.models import Grade, GradingBatch, GradingCost
from router.db import make_engine, session_factory
from router.money import usd
from tests.conftest import DATASETS
from tierwise.cli import app

PER_CLASS = "600"
STATUS = re.compile(
    r"│ (\S+)\s+│\s+\d+ │\s+\d+ │\s+\d+/\d+ │.*?│ (escalated|baseline|not yet conclusive)"
)


async def _grades(url: str) -> tuple[dict[str, tuple[str, float | None]], int, int]:
    """Per decision id: (verdict, grading cost USD); and the batches and cost rows written."""
    engine = make_engine(url)
    try:
        async with session_factory(engine)() as session:
            grades = {
                g.decision_id: (g.verdict, usd(g.cost_nusd))
                for g in (await session.exec(select(Grade))).all()
            }
            batches = (await session.exec(select(func.count()).select_from(GradingBatch))).one()
            costs = (await session.exec(select(func.count()).select_from(GradingCost))).one()
    finally:
        await engine.dispose()
    return grades, int(batches), int(costs)


def test_batch_grading_replay_ends_like_realtime_at_half_the_grading_spend(
    tmp_path: Path,
) -> None:
    runs = {}
    for grading in ("realtime", "batch"):
        url = f"sqlite+aiosqlite:///{tmp_path / f'{grading}.db'}"
        result = CliRunner().invoke(
            app,
            [
                "replay",
                str(DATASETS / "mt_bench.jsonl"),
                str(DATASETS / "gsm8k.jsonl"),
                "--per-class",
                PER_CLASS,
                "--grading",
                grading,
                "--database-url",
                url,
            ],
        )
        assert result.exit_code == 0, result.output
        statuses = dict(STATUS.findall(result.output))
        assert len(statuses) == 9, result.output
        runs[grading] = (statuses, result.output, asyncio.run(_grades(url)))

    (
        (rt_status, rt_out, (rt_grades, rt_batches, _)),
        (b_status, b_out, (b_grades, batches, costs)),
    ) = (
        runs["realtime"],
        runs["batch"],
    )
    assert b_status == rt_status
    assert "escalated" in rt_status.values() and "baseline" in rt_status.values()
    # The same samples got the same verdicts; each one's grading cost is half.
    assert set(b_grades) == set(rt_grades)
    for decision_id, (verdict, cost) in rt_grades.items():
        b_verdict, b_cost = b_grades[decision_id]
        assert b_verdict == verdict, decision_id
        assert (b_cost is None) == (cost is None), decision_id
        if cost is not None and b_cost is not None:
            assert b_cost == pytest.approx(cost / 2, rel=1e-9), decision_id
    rt_spend = sum(c for _, c in rt_grades.values() if c is not None)
    b_spend = sum(c for _, c in b_grades.values() if c is not None)
    assert rt_spend > 0 and b_spend == pytest.approx(rt_spend / 2, rel=1e-9)
    assert rt_batches == 0 and batches > 0 and costs > 0
    # The printed books say the same to the cent.
    spend = re.compile(r"grading spend: \$([\d,.]+)")
    printed_rt = float(spend.findall(rt_out)[0].replace(",", ""))
    printed_b = float(spend.findall(b_out)[0].replace(",", ""))
    assert printed_b == pytest.approx(printed_rt / 2, abs=0.0001)
    # Time from sample to verdict per mode, and that a replay's clock is compressed.
    assert re.search(r"realtime grades:\s+\d+\s+median: [\d.]+ s\s+p90: [\d.]+ s", rt_out)
    assert re.search(r"batch\s+grades:\s+\d+\s+median: [\d.]+ s\s+p90: [\d.]+ s", b_out)
    assert "time is compressed" in b_out


def test_replay_refuses_an_unknown_grading_mode(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    args = ["replay", str(DATASETS / "gsm8k.jsonl"), "--grading", "by-carrier-pigeon"]
    result = CliRunner().invoke(app, [*args, "--database-url", url])
    assert result.exit_code == 2
    assert "--grading must be realtime or batch" in result.output
