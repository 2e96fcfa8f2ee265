"""The held-out loader of ``tierwise eval``: a bad line is named by file and line and costs only
itself (10,000 lines with 3 bad ones grade 9,997); a file that is not a held-out set is refused
with one line naming it, and the run goes on with the others; the manifest's grader spec picks
the grader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from evaluator.datasets import load_held_out, scan_held_out
from evaluator.evaluation import EvalSpec, ResultsLog, build_report, run_eval
from router.policy import builtin_policy_path, load_policy
from router.providers import Provider, ReplayProvider
from tests.conftest import DATASETS, ROOT

CHEAP, REFERENCE = "mixtral-8x7b-instruct", "gpt-4-1106-preview"
CLI = (sys.executable, "-m", "tierwise.cli")
BAD = {17: "{oops", 5000: "missing messages", 9999: "mistyped correct"}


def line(i: int) -> dict[str, Any]:
    return {
        "id": f"syn/{i}",
        "dataset": "syn",
        "task_type": "syn.even" if i % 2 == 0 else "syn.odd",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "outputs": {CHEAP: {"correct": i % 5 != 0}, REFERENCE: {"correct": True}},
    }


def write_set(folder: Path, n: int = 10_000) -> Path:
    rows = []
    for lineno in range(1, n + 1):
        if BAD.get(lineno) == "{oops":
            rows.append("{oops")
            continue
        row = line(lineno)
        if BAD.get(lineno) == "missing messages":
            del row["messages"]
        if BAD.get(lineno) == "mistyped correct":
            row["outputs"][CHEAP]["correct"] = "yes"
        rows.append(json.dumps(row))
    path = folder / "syn.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    manifest = [
        {
            "name": "syn",
            "file": "syn.jsonl",
            "kind": "held_out",
            "graders": [{"match": "syn.*", "grader": "recorded_correctness"}],
        }
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def test_three_bad_lines_of_ten_thousand_are_named_and_the_rest_load(tmp_path: Path) -> None:
    path = write_set(tmp_path)
    scan = scan_held_out(path)
    assert scan.refused is None and scan.held_out is not None
    assert len(scan.held_out.items) == 9_997
    assert [e.message for e in scan.errors] == [
        f"{path} line 17: not JSON: key must be a string at column 2",
        f"{path} line 5000: messages: Field required",
        f"{path} line 9999: outputs.{CHEAP}.correct: Input should be a valid boolean",
    ]
    assert [g.match for g in scan.held_out.graders] == ["syn.*"]


async def test_an_eval_over_them_grades_9997_and_lists_the_3(tmp_path: Path) -> None:
    path = write_set(tmp_path)
    scan = scan_held_out(path)
    assert scan.held_out is not None
    # The replay policy names mt_bench/gsm8k/mmlu graders only: the set's spec grades syn.*.
    spec = EvalSpec(
        [scan.held_out], [CHEAP, REFERENCE], REFERENCE, load_policy(builtin_policy_path("replay"))
    )
    assert {s.grader for s in spec.settings_by_class().values()} == {"recorded_correctness"}
    log = ResultsLog(tmp_path / "out" / "results.jsonl")
    replay = ReplayProvider()

    def nobody(_model: str) -> Provider:
        return replay

    run = await run_eval(spec, log, answer_provider=None, grading_provider=nobody)
    report = build_report(spec, log, run, seconds=0.0, line_errors=[e.message for e in scan.errors])
    log.close()
    assert (run.answered, run.graded, run.failures) == (2 * 9_997, 2 * 9_997, [])
    assert sum(r.graded for r in report.rows) == 2 * 9_997
    assert len(report.line_errors) == 3 and all(f"{path} line " in e for e in report.line_errors)
    cheap = {r.task_class: r for r in report.rows if r.model == CHEAP}
    # Every fifth line is a cheap miss. Odd: 5000 lines less the bad 17 and 9999, misses 5, 15,
    # ..., 9995 (1,000). Even: 5000 less the bad 5000, misses 10, ..., 9990 (999).
    assert (cheap["syn.odd"].disagree, cheap["syn.odd"].graded) == (1_000, 4_998)
    assert (cheap["syn.even"].disagree, cheap["syn.even"].graded) == (999, 4_999)


def test_a_prompt_template_file_is_refused_in_one_line(tmp_path: Path) -> None:
    prompts = tmp_path / "judge_prompts.jsonl"
    shutil.copy(ROOT / "evaluator/graders/judge_prompts.jsonl", prompts)
    scan = scan_held_out(prompts)
    assert scan.held_out is None and scan.errors == []
    assert scan.refused is not None
    assert scan.refused.message == (
        f"{prompts}: not a held-out set: its first line has neither 'messages' nor "
        "'task_type' (keys: category, description, name, output_format, prompt_template, "
        "system_prompt)"
    )


def test_a_file_the_manifest_calls_something_else_is_refused() -> None:
    scan = scan_held_out(DATASETS / "llmbar.jsonl")
    assert scan.refused is not None and scan.held_out is None
    assert scan.refused.message == (
        f"{DATASETS / 'llmbar.jsonl'}: not a held-out set: its manifest entry says kind "
        "'judge_calibration', not 'held_out'"
    )


def test_the_cli_refuses_one_file_and_evaluates_the_other(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write_set(data, n=40)
    prompts = data / "prompts.jsonl"
    shutil.copy(ROOT / "evaluator/graders/judge_prompts.jsonl", prompts)
    out = tmp_path / "out"
    result = subprocess.run(
        [*CLI, "eval", str(prompts), str(path), "--models", CHEAP, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    refused = [ln for ln in result.stdout.splitlines() if ln.startswith("refused: ")]
    assert refused == [
        f"refused: {prompts}: not a held-out set: its first line has neither "
        "'messages' nor 'task_type' (keys: category, description, name, "
        "output_format, prompt_template, system_prompt)"
    ]
    bad = [ln for ln in result.stdout.splitlines() if ln.startswith("bad line: ")]
    assert bad == [f"bad line: {path} line 17: not JSON: key must be a string at column 2"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["refused"] == [refused[0].removeprefix("refused: ")]
    assert sum(r["graded"] for r in report["rows"]) == 2 * 39


def test_the_shipped_sets_carry_their_grader_spec() -> None:
    graders = {
        name: [(g.match, g.overrides) for g in load_held_out(DATASETS / f"{name}.jsonl").graders]
        for name in ("mt_bench", "gsm8k", "mmlu")
    }
    assert graders == {
        "mt_bench": [("mt_bench.*", {"grader": "judge_single", "pass_mark": 7})],
        "gsm8k": [("gsm8k", {"grader": "numeric"})],
        "mmlu": [("mmlu.*", {"grader": "recorded_correctness"})],
    }


def test_bad_eval_arguments_are_one_line_naming_the_option(tmp_path: Path) -> None:
    mt = str(DATASETS / "mt_bench.jsonl")
    out = str(tmp_path / "out")
    cases = [
        (["--models", "gpt-5"], "not in the catalog of policy replay: gpt-5 (known: "),
        (["--models", CHEAP, "--live"], "--live needs TIERWISE_REFERENCE_PROVIDER=catalog"),
        (["--models", CHEAP, "--threshold", "2"], "--threshold must be in (0, 1), got 2.0"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [*CLI, "eval", mt, *args, "--out", out],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            check=False,
            env={**os.environ, "TIERWISE_REFERENCE_PROVIDER": "replay"},
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in " ".join(result.stdout.split()), result.stdout
        assert "Traceback" not in result.stderr
