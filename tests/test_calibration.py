"""Judge calibration against human labels: LLMBar's published statistics reproduced, kappa and
its interval checked against independent computations, PandaLM vs its three annotators, the
escalation gate, and the ``tierwise eval judge`` command."""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from evaluator.calibration import (
    CalibrationSet,
    JudgeCalibration,
    arrays,
    calibrate,
    cohen_kappa,
    combine_orders,
    kappa_bootstrap_interval,
    kappa_from_table,
    kappa_interval,
    kappa_se,
    llmbar_authors_statistics,
    load_calibration_set,
    load_llmbar_statistics,
    majority_label,
    may_escalate,
)
from router.policy import ClassSettings, builtin_policy_path, load_policy
from tests.conftest import DATASETS
from tierwise.cli import app


@cache
def llmbar() -> CalibrationSet:
    return load_calibration_set(DATASETS / "llmbar.jsonl")


@cache
def pandalm() -> CalibrationSet:
    return load_calibration_set(DATASETS / "pandalm.jsonl")


@cache
def published() -> dict[tuple[str, str], dict[str, Any]]:
    return load_llmbar_statistics(DATASETS / "llmbar_statistics.jsonl")


def one(cal: CalibrationSet, subset: str, judge: str) -> JudgeCalibration:
    return next(c for c in calibrate(cal, judge=judge) if c.group == subset and c.judge == judge)


# ---- LLMBar: the authors' numbers, every subset x evaluator -----------------------------------


def test_every_published_pair_is_in_the_data() -> None:
    pairs = {(i.subset, j) for i in llmbar().items for j in i.verdicts}
    assert pairs == set(published()) and len(pairs) == 21


@pytest.mark.parametrize(("subset", "judge"), sorted(published()))
def test_llmbar_statistics_reproduced_exactly(subset: str, judge: str) -> None:
    """Every key of the authors' statistics.json, recomputed from the recorded verdicts with
    their definitions: the count strings byte for byte, the kappas to 1e-12."""
    theirs = published()[(subset, judge)]
    items = [i for i in llmbar().items if i.subset == subset]
    mine = llmbar_authors_statistics(*arrays(items, judge))
    for key in ("correct_False", "correct_True", "correct_average", "correct_both", "equal"):
        assert mine[key] == theirs[key], key
    for key in ("kappa_False", "kappa_True", "kappa_average", "kappa_agreement"):
        assert mine[key] == pytest.approx(theirs[key], rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize(("subset", "judge"), sorted(published()))
def test_our_agreement_matches_theirs_where_definitions_match(subset: str, judge: str) -> None:
    """Our per-order counts equal the authors' correct_False/True/both and equal; our
    agreement rate differs from their percentage only by the missing verdicts we keep out of
    the denominator (replies without a verdict)."""
    theirs = published()[(subset, judge)]
    c = one(llmbar(), subset, judge)

    def count(key: str) -> tuple[int, int]:
        k, n = re.match(r"(\d+) / (\d+) = ", theirs[key]).groups()  # type: ignore[union-attr]
        return int(k), int(n)

    first, second = c.orders["order_12"], c.orders["order_21"]
    assert (first.agree, c.n) == count("correct_False")
    assert (second.agree, c.n) == count("correct_True")
    assert (c.correct_both, c.n) == count("correct_both")
    assert (c.equal, c.n) == count("equal")
    for stats in (first, second):
        assert stats.valid + stats.invalid + stats.refused == c.n
        assert stats.accuracy == stats.agree / c.n
    if first.invalid + first.refused == 0:
        assert first.agreement == first.accuracy


def test_llmbar_kappa_difference_is_the_authors_label_coding() -> None:
    """The authors' kappa_False for GPT-4 on Natural is 0.268 with 95% accuracy: their code maps
    a verdict "2" to 0 but keeps the label 2, so only "output_1 wins" can agree. Coded alike,
    the same verdicts give kappa 0.898."""
    human, v12, _ = arrays([i for i in llmbar().items if i.subset == "Natural"], "GPT-4/Vanilla")
    assert cohen_kappa(np.where(v12 == 1, 1, 0), human) == pytest.approx(0.26775689528923596)
    assert cohen_kappa(v12, human) == pytest.approx(0.8978, abs=1e-4)
    c = one(llmbar(), "Natural", "GPT-4/Vanilla")
    assert c.orders["order_12"].kappa.kappa == pytest.approx(cohen_kappa(v12, human))


def test_llmbar_missing_verdicts_are_refusals_with_reasons() -> None:
    """LLaMA2 refused twice ("I cannot provide a response ..."); ChatGPT and GPT-4 hit Azure's
    content filter on 11 LLMEval^2 verdicts: refused, kept out of agreement, counted."""
    llama = one(llmbar(), "Adversarial/GPTInst", "LLaMA2/Vanilla")
    assert (llama.orders["order_12"].refused, llama.orders["order_12"].valid) == (1, 91)
    assert llama.statuses["refused"] == 1
    gpt4 = one(llmbar(), "Processed/LLMEval^2", "GPT-4/Vanilla_NoRules")
    assert gpt4.statuses == {"ok": 389, "refused": 11}
    assert gpt4.invalid_rate == pytest.approx(11 / 400)
    assert gpt4.orders["order_12"].agree / gpt4.orders["order_12"].valid == pytest.approx(152 / 194)


def test_position_flips_per_subset() -> None:
    """With no ties in LLMBar, a flip is an item whose two orders disagree = n - equal for
    judges without missing verdicts."""
    for (subset, judge), theirs in published().items():
        c = one(llmbar(), subset, judge)
        equal = int(theirs["equal"].split(" / ")[0])
        if c.flip_base == c.n:
            assert c.flips == c.n - equal, (subset, judge)
    natural = one(llmbar(), "Natural", "GPT-4/Vanilla")
    assert (natural.flips, natural.flip_base, natural.flip_rate) == (5, 100, 0.05)


# ---- kappa and its interval -------------------------------------------------------------------


def test_cohen_kappa_textbook_example() -> None:
    """Two raters, 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15. p_o = 0.7, p_e = 0.5,
    kappa = 0.4 (Cohen 1960's definition)."""
    table = np.array([[20, 5], [10, 15]])
    assert kappa_from_table(table) == pytest.approx(0.4)
    a = [1] * 25 + [2] * 25
    b = [1] * 20 + [2] * 5 + [1] * 10 + [2] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert math.isnan(kappa_from_table(np.array([[5, 0], [0, 0]])))  # p_e = 1: undefined
    assert kappa_interval([1, 1], [1, 1], [1, 2]).kappa is None


def delta_method_se(table: np.ndarray) -> float:
    """SE of kappa by the delta method with a numerical gradient over the cell proportions,
    multinomial covariance diag(p) - p p^T: an independent route to the same quantity."""
    n = table.sum()
    p = (table / n).ravel()
    k = table.shape[0]
    grad = np.zeros_like(p)
    for i in range(len(p)):
        step = np.zeros_like(p)
        step[i] = 1e-7
        grad[i] = (
            kappa_from_table((p + step).reshape(k, k)) - kappa_from_table((p - step).reshape(k, k))
        ) / 2e-7
    return float(np.sqrt(grad @ (np.diag(p) - np.outer(p, p)) @ grad / n))


@pytest.mark.parametrize(
    "table",
    [
        [[20, 5], [10, 15]],
        [[88, 14], [10, 88]],
        [[5, 42, 45], [13, 332, 71], [20, 86, 360]],  # PandaLM gpt-3.5 (human x judge)
    ],
)
def test_fleiss_cohen_everitt_se_is_the_delta_method_se(table: list[list[int]]) -> None:
    t = np.array(table, dtype=float)
    assert kappa_se(t) == pytest.approx(delta_method_se(t), rel=1e-5)


def test_interval_and_bootstrap_agree_on_gpt4_mt_bench() -> None:
    c = one(llmbar(), "Processed/MT-Bench", "GPT-4/Vanilla_NoRules")
    est = c.orders["order_12"].kappa
    assert est.n == 200 and est.kappa is not None and est.se is not None
    assert (est.ci_low, est.ci_high) == pytest.approx(
        (est.kappa - 1.959964 * est.se, est.kappa + 1.959964 * est.se), abs=1e-6
    )
    human, v12, _ = arrays(
        [i for i in llmbar().items if i.subset == "Processed/MT-Bench"], "GPT-4/Vanilla_NoRules"
    )
    lo, hi = kappa_bootstrap_interval(human, v12, [1, 2], np.random.default_rng(11), n_boot=2000)
    assert lo == pytest.approx(est.ci_low, abs=0.03) and hi == pytest.approx(est.ci_high, abs=0.03)
    again = kappa_bootstrap_interval(human, v12, [1, 2], np.random.default_rng(11), n_boot=2000)
    assert again == (lo, hi)  # the generator is passed in: reproducible


def test_combine_orders_makes_a_flip_a_tie() -> None:
    combined, flips = combine_orders([1, 1, 2, 1, -1, 0], [1, 2, 2, 0, 1, 0])
    assert combined.tolist() == [1, 0, 2, 0, -1, 0]
    assert flips.tolist() == [False, True, False, True, False, False]


# ---- PandaLM: three annotators, majority vote -------------------------------------------------


def test_majority_label() -> None:
    assert majority_label([2, 2, 0]) == 2
    assert majority_label([0, 0, 0]) == 0
    assert majority_label([0, 1, 2]) is None  # no majority: left out, counted
    assert majority_label([1]) == 1


def test_pandalm_consensus_matches_the_published_label_distribution() -> None:
    """PandaLM's README gives the test-set label distribution 0: 105, 1: 422, 2: 472; the
    majority of the three annotators reproduces it, and no item lacks a majority."""
    human, _, _ = arrays(pandalm().items, "pandalm-7b")
    assert {k: int(np.sum(human == k)) for k in (0, 1, 2)} == {0: 105, 1: 422, 2: 472}
    assert int(np.sum(human < 0)) == 0


def test_pandalm_judges_vs_annotators() -> None:
    gpt = one(pandalm(), "testset-v1", "gpt-3.5-turbo")
    assert list(gpt.orders) == ["order_12"] and gpt.both is None  # one order only
    first = gpt.orders["order_12"]
    # 25 "garbage" answers are invalid: kept out of agreement, counted.
    assert (first.n, first.valid, first.invalid, first.refused, first.agree) == (
        999,
        974,
        25,
        0,
        697,
    )
    assert first.confusion.tolist() == [[5, 42, 45], [13, 332, 71], [20, 86, 360]]
    assert first.kappa.kappa == pytest.approx(0.4929, abs=1e-4)
    panda = one(pandalm(), "testset-v1", "pandalm-7b").orders["order_12"]
    assert (panda.valid, panda.invalid, panda.agree) == (999, 0, 667)
    assert panda.kappa.kappa == pytest.approx(0.4354, abs=1e-4)


def test_calibrate_by_class_and_judge_filter() -> None:
    by_class = calibrate(pandalm(), judge="pandalm-7b", by="class")
    groups = [c.group for c in by_class]
    assert groups[-1] == "all" and len(set(groups)) == len(groups)
    assert sum(c.n for c in by_class if c.group != "all") == 999
    assert {c.judge for c in calibrate(llmbar(), judge="gpt-4")} == {
        "GPT-4/Vanilla",
        "GPT-4/Vanilla_NoRules",
    }


# ---- the escalation gate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "allowed", "why"),
    [
        (ClassSettings(grader="judge_single"), False, "uncalibrated"),
        (ClassSettings(grader="judge_pairwise", judge_kappa=0.55), False, "below the floor"),
        (ClassSettings(grader="judge_single", judge_kappa=0.62), True, ">="),
        (
            ClassSettings(grader="judge_single", judge_kappa=0.7, min_judge_kappa=0.8),
            False,
            "below",
        ),
        (ClassSettings(grader="numeric"), True, "needs no judge"),
        (ClassSettings(grader="reference_answer", compare="label"), True, "needs no judge"),
    ],
)
def test_may_escalate(settings: ClassSettings, allowed: bool, why: str) -> None:
    ok, reason = may_escalate(settings)
    assert ok is allowed and why in reason


def test_replay_policy_judge_kappa_is_the_measured_gpt4_figure() -> None:
    """router/policies/replay.toml sets mt_bench.* judge_kappa from GPT-4 on LLMBar's MT-Bench
    subset (mean of the two orders), so the replay still escalates."""
    measured = one(llmbar(), "Processed/MT-Bench", "GPT-4/Vanilla_NoRules").kappa_mean
    settings = load_policy(builtin_policy_path("replay")).settings_for("mt_bench.math")
    assert measured is not None and settings.judge_kappa == round(measured, 2)
    assert may_escalate(settings)[0] is True


# ---- the command ------------------------------------------------------------------------------


def test_eval_judge_llmbar_command() -> None:
    result = CliRunner().invoke(app, ["eval", "judge", str(DATASETS / "llmbar.jsonl")])
    assert result.exit_code == 0, result.output
    assert result.output.count("│ yes") == 21 and "NO" not in result.output
    natural = next(
        line
        for line in result.output.splitlines()
        if "│ Natural" in line and "GPT-4/Vanilla " in line and "95/100" in line
    )
    assert "0.898 [0.81, 0.99]" in natural and "5/100 5.0%" in natural


def test_eval_judge_pandalm_command_and_errors() -> None:
    result = CliRunner().invoke(
        app, ["eval", "judge", str(DATASETS / "pandalm.jsonl"), "--judge", "gpt-3.5-turbo"]
    )
    assert result.exit_code == 0, result.output
    assert "697/974 71.6%" in result.output and "25/999 2.5%" in result.output
    assert "majority of 3 annotators" in result.output
    bad = CliRunner().invoke(
        app, ["eval", "judge", str(DATASETS / "pandalm.jsonl"), "--judge", "nobody"]
    )
    assert bad.exit_code == 2 and "judge 'nobody' is neither recorded" in bad.output
