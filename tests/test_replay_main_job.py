"""The README's main job: `tierwise replay` over recorded MT-Bench and GSM8K traffic.

The per-class evidence printed must equal a computation straight from the recorded upstream
files (RouteLLM's judgements.jsonl and gsm8k_responses.csv in ../shared/data) over exactly the
items that were sampled and graded.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from pathlib import Path

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner

from evaluator.models import EscalationEvent, Grade
from evaluator.parsing import final_number, numbers_match
from router.db import make_engine, session_factory
from router.models import Decision, Outcome, Sample
from router.money import usd
from tests.conftest import DATASETS, ROOT, SHARED_DATA
from tierwise.cli import app

RECORDED = SHARED_DATA / "routellm" / "routellm" / "evals"
MIXTRAL_UPSTREAM = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ESCALATED = {
    "mt_bench.coding",
    "mt_bench.extraction",
    "mt_bench.math",
    "mt_bench.reasoning",
    "gsm8k",
}
BASELINE = {"mt_bench.humanities", "mt_bench.roleplay", "mt_bench.stem", "mt_bench.writing"}


def recorded_mt_bench_scores() -> dict[str, float]:
    """Mixtral's GPT-4 judge score per item id, read from the upstream file."""
    scores = {}
    with (RECORDED / "mt_bench" / "judgements.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["model"] == MIXTRAL_UPSTREAM:
                scores[f"mt_bench/{row['question_id']}/{row['turn']}"] = float(row["score"])
    return scores


def recorded_gsm8k_agreement() -> dict[str, bool]:
    """Whether Mixtral's and GPT-4's final numbers agree, per item id, from the upstream CSV."""
    csv.field_size_limit(1 << 30)
    out = {}
    with (RECORDED / "gsm8k" / "gsm8k_responses.csv").open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            mine = final_number(row[f"{MIXTRAL_UPSTREAM}_response"])
            ref = final_number(row["gpt-4-1106-preview_response"])
            assert ref is not None
            out[f"gsm8k/{i}"] = mine is not None and numbers_match(mine, ref)
    return out


async def graded(url: str) -> tuple[dict[str, list[tuple[str, str]]], dict[str, EscalationEvent]]:
    engine = make_engine(url)
    async with session_factory(engine)() as session:
        rows = (
            await session.exec(
                select(Grade.task_class, Grade.verdict, Sample.item_id)
                .join(Sample, col(Sample.decision_id) == col(Grade.decision_id))
                .where(col(Grade.model) == "mixtral-8x7b-instruct", col(Grade.shadow).is_(False))
            )
        ).all()
        events = {e.task_class: e for e in (await session.exec(select(EscalationEvent))).all()}
    await engine.dispose()
    by_class: dict[str, list[tuple[str, str]]] = {}
    for task_class, verdict, item_id in rows:
        assert item_id is not None
        by_class.setdefault(task_class, []).append((item_id, verdict))
    return by_class, events


def test_replay_escalates_what_the_recordings_imply(tmp_path: Path) -> None:
    if not RECORDED.exists():
        pytest.fail(f"recorded upstream data not found at {RECORDED} (shared/data beside the repo)")
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(DATASETS / "mt_bench.jsonl"),
            str(DATASETS / "gsm8k.jsonl"),
            "--database-url",
            url,
        ],
    )
    assert result.exit_code == 0, result.output
    printed = {
        m.group(1): (int(m.group(2)), int(m.group(3)), m.group(4))
        for m in re.finditer(
            r"│ (\S+)\s+│\s+\d+ │\s+\d+ │\s+(\d+)/(\d+) │.*?│ "
            r"(escalated|baseline|not yet conclusive)",
            result.output,
        )
    }
    assert set(printed) == ESCALATED | BASELINE, result.output
    assert {c for c, (_, _, s) in printed.items() if s == "escalated"} == ESCALATED
    assert {c for c, (_, _, s) in printed.items() if s == "baseline"} == BASELINE

    by_class, events = asyncio.run(graded(url))
    scores, agreement = recorded_mt_bench_scores(), recorded_gsm8k_agreement()
    for task_class, (k, n, _status) in printed.items():
        items = by_class[task_class]
        if task_class == "gsm8k":
            expected_k = sum(not agreement[item] for item, _ in items)
        else:
            expected_k = sum(scores[item] < 7 for item, _ in items)
        assert (k, n) == (expected_k, len(items)), task_class
        if task_class in ESCALATED:
            assert (events[task_class].k, events[task_class].n) == (k, n)
    assert "all on gpt-4-1106-preview" in result.output and "saved:" in result.output


def test_replay_refuses_a_used_database_without_reset(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    args = ["replay", str(DATASETS / "mt_bench.jsonl"), "--per-class", "20", "--database-url", url]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert "--reset" in again.output
    assert CliRunner().invoke(app, [*args, "--reset"]).exit_code == 0


def test_an_uncalibrated_judge_holds_the_class_and_says_so(tmp_path: Path) -> None:
    policy = (ROOT / "router" / "policies" / "replay.toml").read_text(encoding="utf-8")
    assert "judge_kappa" in policy
    path = tmp_path / "no-kappa.toml"
    path.write_text(
        "\n".join(line for line in policy.splitlines() if "judge_kappa" not in line),
        encoding="utf-8",
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            str(DATASETS / "mt_bench.jsonl"),
            "--per-class",
            "800",
            "--policy",
            str(path),
            "--database-url",
            url,
        ],
    )
    assert result.exit_code == 0, result.output
    held = re.findall(r"│ (mt_bench\.\w+)\s+│.*held: judge uncalibrated", result.output)
    assert set(held) == {
        "mt_bench.coding",
        "mt_bench.extraction",
        "mt_bench.math",
        "mt_bench.reasoning",
    }
    assert "escalated" not in result.output


async def _stored(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every decision (id, class, model, sampled) and outcome (id, model, tokens, cost), by id."""
    engine = make_engine(url)
    try:
        async with session_factory(engine)() as session:
            decisions = (
                await session.exec(
                    select(Decision.id, Decision.task_class, Decision.model, Decision.sampled)
                )
            ).all()
            outcomes = [
                (o.decision_id, o.served_model, o.input_tokens, o.output_tokens, usd(o.cost_nusd))
                for o in (await session.exec(select(Outcome))).all()
            ]
    finally:
        await engine.dispose()
    return sorted(tuple(d) for d in decisions), sorted(outcomes)


def test_replay_through_the_gateway_ends_where_the_decision_api_does(tmp_path: Path) -> None:
    runs = {}
    for via in ("api", "gateway"):
        url = f"sqlite+aiosqlite:///{tmp_path / f'{via}.db'}"
        result = CliRunner().invoke(
            app,
            [
                "replay",
                str(DATASETS / "mt_bench.jsonl"),
                str(DATASETS / "gsm8k.jsonl"),
                "--per-class",
                "400",
                "--tick",
                "200",
                "--via",
                via,
                "--database-url",
                url,
            ],
        )
        assert result.exit_code == 0, result.output
        # The classes and the books; the time from sample to verdict is the clock's, not theirs.
        end = result.output.index("time from sample to verdict")
        table = result.output[result.output.index("task class") : end]
        runs[via] = (table, asyncio.run(_stored(url)))
    assert runs["gateway"][0] == runs["api"][0]
    api_decisions, api_outcomes = runs["api"][1]
    gateway_decisions, gateway_outcomes = runs["gateway"][1]
    assert len(api_decisions) == 9 * 400
    assert gateway_decisions == api_decisions
    assert gateway_outcomes == api_outcomes


def test_replay_refuses_an_unknown_via(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    args = ["replay", str(DATASETS / "gsm8k.jsonl"), "--via", "carrier-pigeon"]
    result = CliRunner().invoke(app, [*args, "--database-url", url])
    assert result.exit_code == 2
    assert "--via must be api or gateway" in result.output
