"""``tierwise dataset export``: the sampled outcomes of recorded GSM8K traffic (``tierwise
replay``) come out as a held-out set with a manifest entry, and ``tierwise eval`` on it
reproduces every verdict the grading job stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlmodel import col, select

from evaluator.datasets import scan_held_out
from evaluator.models import Grade
from router.db import make_engine, session_factory
from tests.conftest import DATASETS, ROOT

CHEAP, REFERENCE = "mixtral-8x7b-instruct", "gpt-4-1106-preview"


def tierwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )


async def test_exported_traffic_evaluates_to_the_stored_verdicts(
    database_url: str, tmp_path: Path
) -> None:
    replayed = tierwise(
        "replay", str(DATASETS / "gsm8k.jsonl"), "--per-class", "200", "--tick", "200",
        "--database-url", database_url,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    engine = make_engine(database_url)
    async with session_factory(engine)() as session:
        grades = (await session.exec(select(Grade).where(col(Grade.shadow).is_(False)))).all()
    await engine.dispose()
    stored = {g.decision_id: g.verdict for g in grades}
    assert len(stored) >= 5 and set(stored.values()) <= {"agree", "disagree"}

    out = tmp_path / "sets" / "traffic.jsonl"
    exported = tierwise(
        "dataset", "export", "--out", str(out), "--since", "2000-01-01", "--class", "gsm8k",
        "--database-url", database_url,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stdout + exported.stderr
    scan = scan_held_out(out)
    assert scan.refused is None and scan.errors == [] and scan.held_out is not None
    items = scan.held_out.items
    assert {i.id.removeprefix("traffic/") for i in items} == set(stored)
    first = items[0]
    assert first.task_type == "gsm8k" and set(first.outputs) == {CHEAP, REFERENCE}
    cheap = first.outputs[CHEAP]
    assert cheap.judge is not None and cheap.judge.prompt_name == "numeric"
    assert cheap.usage is not None and cheap.usage.input_tokens > 0
    assert first.reference_answer == first.outputs[REFERENCE].text
    manifest = json.loads((out.parent / "manifest.json").read_text(encoding="utf-8"))
    [entry] = manifest
    assert (entry["file"], entry["kind"], entry["rows"]) == (
        "traffic.jsonl",
        "held_out",
        len(items),
    )
    assert entry["graders"][0]["match"] == "gsm8k"
    assert entry["graders"][0]["grader"] == "numeric"

    report_dir = tmp_path / "eval"
    evaluated = tierwise("eval", str(out), "--models", CHEAP, "--out", str(report_dir))
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    [row] = [r for r in report["rows"] if r["model"] == CHEAP]
    k = sum(v == "disagree" for v in stored.values())
    assert (row["disagreement"]["k"], row["disagreement"]["n"]) == (k, len(stored))
