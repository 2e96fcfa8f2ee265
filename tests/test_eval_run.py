"""``tierwise eval`` on the shipped MMLU, GSM8K and MT-Bench sets: the three reports are written,
every per-class figure equals a count made here straight from the JSONL files, and the
recommended policy applies and routes each class to its recommended model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from evaluator.parsing import final_number, numbers_match
from evaluator.stats import wilson
from tests.conftest import DATASETS, ROOT, running_service

CHEAP, REFERENCE = "mixtral-8x7b-instruct", "gpt-4-1106-preview"
THRESHOLD = 0.2
SETS = ("mt_bench.jsonl", "gsm8k.jsonl", "mmlu.jsonl")


def tierwise(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    result = tierwise(
        "eval",
        *(str(DATASETS / s) for s in SETS),
        "--models",
        CHEAP,
        "--out",
        str(out),
        "--threshold",
        str(THRESHOLD),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _lines(name: str) -> list[dict[str, Any]]:
    text = (DATASETS / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def expected_counts() -> dict[tuple[str, str], dict[str, Any]]:
    """(class, model) -> disagreement k/n, accuracy k/n (or None) and mean score (or None),
    counted from the files: MMLU disagree = exactly one of the two recorded correct; GSM8K
    disagree = final numbers differ, accuracy = recorded correctness; MT-Bench disagree =
    recorded GPT-4 score below 7, score = that score."""
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"k": 0, "n": 0, "acc_k": 0, "acc_n": 0, "scores": []}
    )
    for name in SETS:
        for row in _lines(name):
            task, outs = row["task_type"], row["outputs"]
            for model in (CHEAP, REFERENCE):
                mine, ref = outs[model], outs[REFERENCE]
                c = out[(task, model)]
                if row["dataset"] == "mt_bench":
                    score = mine["judge"]["score"]
                    c["k"] += score < 7
                    c["scores"].append(score)
                elif row["dataset"] == "gsm8k":
                    a, b = final_number(mine["text"]), final_number(ref["text"])
                    c["k"] += not (a is not None and b is not None and numbers_match(a, b))
                else:
                    c["k"] += mine["correct"] != ref["correct"]
                c["n"] += 1
                if mine["correct"] is not None:
                    c["acc_k"] += mine["correct"]
                    c["acc_n"] += 1
    return out


def test_the_reports_are_written_and_match_the_recorded_files(run_dir: Path) -> None:
    for name in ("report.md", "report.json", "report.html", "recommended-policy.toml"):
        assert (run_dir / name).stat().st_size > 0
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    assert {b["name"] for b in report["benchmarks"]} == {"mt_bench", "gsm8k", "mmlu"}
    rows = {(r["task_class"], r["model"]): r for r in report["rows"]}
    expected = expected_counts()
    assert set(rows) == set(expected) and len(rows) == 2 * (8 + 1 + 57)
    for key, want in expected.items():
        row = rows[key]
        got = row["disagreement"]
        assert (got["k"], got["n"]) == (want["k"], want["n"]), key
        ci = wilson(want["k"], want["n"])
        assert (got["low"], got["high"]) == pytest.approx((ci.ci_low, ci.ci_high)), key
        assert row["invalid"] == 0 and row["failed"] == 0
        if want["acc_n"]:
            assert (row["accuracy"]["k"], row["accuracy"]["n"]) == (want["acc_k"], want["acc_n"])
        else:
            assert row["accuracy"] is None
        if want["scores"]:
            assert row["mean_score"] == pytest.approx(sum(want["scores"]) / len(want["scores"]))
        else:
            assert row["mean_score"] is None
    # The figures the README and the datasets' notes state.
    assert rows[("mt_bench.math", CHEAP)]["disagreement"]["k"] == 10
    assert rows[("mmlu.high_school_mathematics", REFERENCE)]["accuracy"]["k"] == 8
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| mt_bench.math | mixtral-8x7b-instruct | 20/20 | 10/20 = 50.0% [29.9%, 70.1%]" in md


def recommended_by_hand() -> dict[str, str]:
    """Per class: the cheap model when its disagreement's Wilson upper bound is below the
    threshold, else the reference."""
    return {
        task: CHEAP if wilson(c["k"], c["n"]).ci_high < THRESHOLD else REFERENCE  # type: ignore[operator]
        for (task, model), c in expected_counts().items()
        if model == CHEAP
    }


def test_the_recommended_table_follows_the_upper_bounds(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    got = {r["task_class"]: r["model"] for r in report["recommended"]}
    want = recommended_by_hand()
    assert got == want
    cheap = {t for t, m in want.items() if m == CHEAP}
    assert {"mt_bench.humanities", "mt_bench.roleplay", "mt_bench.stem"} <= cheap
    assert "gsm8k" not in cheap and "mt_bench.math" not in cheap


async def test_the_recommended_policy_applies_and_routes_accordingly(
    run_dir: Path, database_url: str
) -> None:
    applied = tierwise(
        "policy", "apply", str(run_dir / "recommended-policy.toml"), "--database-url", database_url
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    want = recommended_by_hand()
    async with running_service(database_url, policy=None) as svc:
        for task, model in sorted(want.items()):
            resp = await svc.client.post("/v1/route", json={"task_type": task, "input_tokens": 50})
            assert resp.status_code == 200, resp.text
            assert (task, resp.json()["model"]) == (task, model)
        # A task type the table does not name follows the base policy's unknown_task_types
        # (replay: "reject"), as the base policy did.
        resp = await svc.client.post("/v1/route", json={"task_type": "other", "input_tokens": 5})
        assert resp.status_code == 422
        assert resp.json()["error"]["field"] == "task_type"


def test_an_eval_resumes_from_its_results_log(run_dir: Path, tmp_path: Path) -> None:
    """A second run over the same --out makes nothing anew and writes the same figures."""
    first = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    out = tmp_path / "again"
    out.mkdir()
    (out / "results.jsonl").write_bytes((run_dir / "results.jsonl").read_bytes())
    result = tierwise(
        "eval",
        str(DATASETS / "mt_bench.jsonl"),
        "--models",
        CHEAP,
        "--out",
        str(out),
        "--threshold",
        str(THRESHOLD),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    again = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (again["run"]["answered"], again["run"]["graded"]) == (0, 0)
    assert again["run"]["resumed_answers"] == again["run"]["resumed_grades"] == 320
    mt = [r for r in first["rows"] if r["benchmark"] == "mt_bench"]
    assert again["rows"] == mt
