"""Router metrics of class-level routing (evaluator.routing_curve): exact values on item sets
small enough to compute by hand, the envelope, the baselines, and the splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.routing_curve import (
    GRID,
    CurveItem,
    apgr,
    class_curve,
    cpt,
    curve_items,
    envelope,
    load_contaminated,
    oracle_curve,
    routing_curves,
    split,
)
from router.errors import InvalidInput

ROOT = Path(__file__).resolve().parent.parent
CHEAP, STRONG = "mixtral-8x7b-instruct", "gpt-4-1106-preview"


def flat(points: list[tuple[float, float]]) -> list[float]:
    return [v for point in points for v in point]


def twins() -> list[CurveItem]:
    """Three classes of two identical items: any split puts one of each in the test split.
    Gains: a +1, b +0.5, c -0.5."""
    scores = {"a": (0.0, 1.0), "b": (0.5, 1.0), "c": (1.0, 0.5)}
    return [
        CurveItem(f"{c}{i}", c, cheap, strong)
        for c, (cheap, strong) in scores.items()
        for i in range(2)
    ]


def test_the_class_curve_routes_classes_by_estimated_gain() -> None:
    _, test = split(twins(), 0, 0.5)
    points = class_curve(test, {"a": 1.0, "b": 0.5, "c": -0.5}, 0.0)
    # q: cheap (0 + .5 + 1) / 3 = .5; then a, b, c go to the strong model in turn.
    assert flat(points) == pytest.approx(
        flat([(0, 0.5), (1 / 3, 2.5 / 3), (2 / 3, 1.0), (1, 2.5 / 3)])
    )


def test_exact_figures_on_a_hand_computed_set() -> None:
    out = routing_curves("toy", twins(), cheap_model="c", strong_model="s", seeds=(0, 1, 2))
    # Test split: one item per class; q_cheap .5, q_strong 2.5/3, gap 1/3. Envelope vertices
    # (0, .5) (1/3, 2.5/3) (2/3, 1) then flat: PGR 0, 1, 1.5, 1.5.
    # APGR = 1/3 * (0 + 1)/2 + 1/3 * (1 + 1.5)/2 + 1/3 * 1.5 = 6.5/6.
    for key, value in (("apgr", 6.5 / 6), ("cpt_50", 1 / 6), ("cpt_80", 0.8 / 3)):
        assert out[key] == pytest.approx({"mean": value, "min": value, "max": value})
    # The oracle routes items: the same order here, so the same figures.
    assert out["oracle"] == pytest.approx({"apgr": 6.5 / 6, "cpt_50": 1 / 6, "cpt_80": 0.8 / 3})
    assert out["random"] == {"apgr": 0.5, "cpt_50": 0.5, "cpt_80": 0.8}
    assert [p["strong_share"] for p in out["points"]] == list(GRID)
    assert out["points"][0]["quality"] == pytest.approx(0.5)
    assert out["points"][-1]["quality"] == pytest.approx(1.0)  # flat after the best point
    assert out["seeds"] == [0, 1, 2] and out["calibration_share"] == 0.5
    assert out["routellm"] == []
    json.dumps(out)  # JSON-able as it is


def test_the_envelope_drops_a_dip_and_is_integrated_exactly() -> None:
    points = [(0.0, 0.0), (0.4, 0.3), (0.2, 0.5), (0.6, 0.8), (1.0, 1.0), (0.6, 0.7)]
    env = envelope(points)
    assert env == [(0.0, 0.0), (0.2, 0.5), (0.6, 0.8), (1.0, 1.0)]
    # 0.2 * .25 + 0.4 * .65 + 0.4 * .9 = 0.67
    assert apgr(env, 0.0, 1.0) == pytest.approx(0.67)
    assert cpt(env, 0.0, 1.0, 0.5) == pytest.approx(0.2)
    assert cpt(env, 0.0, 1.0, 0.6) == pytest.approx(0.2 + 0.4 / 3)
    assert cpt(env, 0.0, 1.0, 1.01) is None


def test_the_oracle_stops_routing_where_the_strong_model_is_no_better() -> None:
    items = [
        CurveItem("1", "x", 0.0, 1.0),
        CurveItem("2", "x", 1.0, 1.0),
        CurveItem("3", "x", 1.0, 0.0),
        CurveItem("4", "x", 0.0, 0.0),
    ]
    assert flat(oracle_curve(items)) == pytest.approx(flat([(0, 0.5), (0.25, 0.75), (1, 0.5)]))
    env = envelope(oracle_curve(items))
    # q_cheap = q_strong here; against a gap of 0.5 (cheap .25, strong .75) for the arithmetic:
    assert apgr(env, 0.25, 0.75) == pytest.approx(0.25 * (0.5 + 1.0) / 2 + 0.75 * 1.0)


def test_a_single_class_is_exactly_the_random_router() -> None:
    items = [CurveItem(str(i), "gsm8k", float(i % 2), float(i % 3 != 0)) for i in range(60)]
    out = routing_curves("gsm8k", items, cheap_model="c", strong_model="s")
    assert out["apgr"] == pytest.approx({"mean": 0.5, "min": 0.5, "max": 0.5})
    assert out["cpt_50"]["mean"] == pytest.approx(0.5)
    assert out["cpt_80"]["mean"] == pytest.approx(0.8)
    assert any("cannot beat the random router" in n for n in out["notes"])
    assert out["routellm"] == [
        {"router": "best published router", "apgr": 0.622, "cpt_50": None, "cpt_80": None}
    ]


def many() -> list[CurveItem]:
    return [
        CurveItem(f"i{i}", f"k{i % 5}", float(i % 2), float((i * 7) % 3 != 0)) for i in range(200)
    ]


def test_splits_are_disjoint_stratified_and_deterministic_per_seed() -> None:
    items = many()
    cal, test = split(items, 3, 0.5)
    assert {i.item_id for i in cal}.isdisjoint({i.item_id for i in test})
    assert sorted(i.item_id for i in cal + test) == sorted(i.item_id for i in items)
    assert sum(i.task_class == "k0" for i in cal) == 20  # half of every class
    assert split(items, 3, 0.5) == (cal, test)
    assert split(items, 4, 0.5) != (cal, test)
    one = routing_curves("b", items, cheap_model="c", strong_model="s", seeds=(3,))
    assert one == routing_curves("b", items, cheap_model="c", strong_model="s", seeds=(3,))
    spread = routing_curves("b", items, cheap_model="c", strong_model="s", seeds=(3, 4, 5))
    assert spread["apgr"]["min"] <= one["apgr"]["mean"] <= spread["apgr"]["max"]


def test_a_class_seen_once_takes_the_pooled_estimate() -> None:
    items = [*twins(), CurveItem("lone", "d", 0.0, 1.0)]
    cal, test = split(items, 0, 0.5)
    assert "lone" in {i.item_id for i in test} and "lone" not in {i.item_id for i in cal}


@pytest.mark.parametrize(
    ("items", "kwargs", "field"),
    [
        ([CurveItem("1", "x", 0, 1)], {}, "items"),
        (twins(), {"seeds": ()}, "seeds"),
        (twins(), {"calibration_share": 1.0}, "calibration_share"),
        ([CurveItem("1", "x", 1, 0), CurveItem("2", "x", 1, 0)], {}, "items"),
        ([CurveItem("1", "x", float("nan"), 0), CurveItem("2", "x", 1, 0)], {}, "items"),
    ],
)
def test_bad_input_names_the_field(
    items: list[CurveItem], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        routing_curves("b", items, cheap_model="c", strong_model="s", **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_mt_bench_items_are_questions_scored_by_the_mean_over_both_turns() -> None:
    name, items, dropped = curve_items(
        ROOT / "datasets" / "mt_bench.jsonl", cheap_model=CHEAP, strong_model=STRONG
    )
    assert (name, len(items), dropped) == ("mt_bench", 80, 0)
    rows = [json.loads(x) for x in (ROOT / "datasets" / "mt_bench.jsonl").open(encoding="utf-8")]
    turns = [
        r["outputs"][CHEAP]["judge"]["score"] for r in rows if r["id"].startswith("mt_bench/81/")
    ]
    first = next(i for i in items if i.item_id == "mt_bench/81")
    assert first.cheap_score == pytest.approx(sum(turns) / 2)
    assert first.task_class == "mt_bench.writing"


SHARED = ROOT.parent / "shared" / "data" / "routellm" / "routellm" / "evals"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")
@pytest.mark.parametrize(("benchmark", "dropped"), [("gsm8k", 12), ("mmlu", 5), ("mt_bench", 8)])
def test_routellm_decontamination_drops_every_listed_prompt(benchmark: str, dropped: int) -> None:
    contaminated = load_contaminated([SHARED / benchmark / "contaminated_prompts.jsonl"])
    assert len(contaminated) == dropped
    _, items, n = curve_items(
        ROOT / "datasets" / f"{benchmark}.jsonl",
        cheap_model=CHEAP,
        strong_model=STRONG,
        contaminated=contaminated,
    )
    assert n == dropped
    if benchmark == "gsm8k":
        out = routing_curves(benchmark, items, cheap_model=CHEAP, strong_model=STRONG)
        assert out["apgr"]["mean"] == pytest.approx(0.5)


def test_a_bad_contamination_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"eval_prompt": "x"}\n{"train_prompt": "y"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="line 2"):
        load_contaminated([bad])


def test_the_command_prints_the_figures_as_json() -> None:
    from typer.testing import CliRunner

    from tierwise.cli import app

    result = CliRunner().invoke(
        app, ["eval", "curve", str(ROOT / "datasets" / "gsm8k.jsonl"), "--seeds", "1,2", "--json"]
    )
    assert result.exit_code == 0, result.output
    [out] = json.loads(result.output)
    assert (out["benchmark"], out["seeds"], out["apgr"]["mean"]) == ("gsm8k", [1, 2], 0.5)
    assert out["notes"][0] == "1319 items; not decontaminated (no --routellm-evals list for gsm8k)"
    bad = CliRunner().invoke(
        app, ["eval", "curve", str(ROOT / "datasets" / "gsm8k.jsonl"), "--seeds", "x"]
    )
    assert bad.exit_code == 2 and "seeds" in bad.output
