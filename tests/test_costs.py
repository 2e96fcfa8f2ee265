"""Cost views (GET /v1/costs, tierwise costs) against rows seeded straight into the database and
after a small replay; the what-if calculator against a hand computation from catalog prices."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from evaluator.models import Grade
from router.db import make_engine, session_factory
from router.models import Decision, Outcome, Sample
from router.money import nusd_of_usd
from tests.conftest import DATASETS, ROOT, running_service
from tierwise.cli import app

DAY1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
# (id, class, tier, routed model, served model, caller, at, in, cached, write, out, cost)
OUTCOMES = [
    (
        "d1",
        "classify",
        "trivial",
        "gpt-4o-mini",
        "gpt-4o-mini",
        "k1",
        DAY1,
        100,
        0,
        0,
        10,
        0.000021,
    ),
    (
        "d2",
        "classify",
        "trivial",
        "gpt-4o-mini",
        "gpt-4o-mini",
        "k2",
        DAY2,
        200,
        50,
        0,
        20,
        0.0000458,
    ),
    (
        "d3",
        "code_generation",
        "complex",
        "claude-3-5-sonnet",
        "claude-3-5-sonnet",
        None,
        DAY1,
        1000,
        500,
        100,
        300,
        0.008025,
    ),
    ("d4", "classify", "trivial", "gpt-4o-mini", "mystery-model", "k1", DAY2, 80, 0, 0, 5, None),
]
# (decision id, cost, shadow); d1 and d3 sampled
GRADES = [("d1", 0.004, False), ("d3", 0.03, True)]
SONNET = (3.00, 0.30, 3.75, 15.00)  # default.toml: input, cached, cache write, output per 1M


async def _seed(url: str) -> None:
    engine = make_engine(url)
    async with session_factory(engine)() as s:
        for did, cls, tier, model, _s, caller, at, tin, *_rest in OUTCOMES:
            s.add(
                Decision(
                    id=did,
                    task_type=cls,
                    task_class=cls,
                    tier=tier,
                    model=model,
                    provider="p",
                    table_version=1,
                    sampled=did in ("d1", "d3"),
                    input_tokens=tin,
                    has_tool_calls=False,
                    caller=caller,
                    created_at=at,
                )
            )
        await s.flush()
        for did, cls, _t, _m, served, _c, at, tin, tc, tw, tout, cost in OUTCOMES:
            s.add(
                Outcome(
                    decision_id=did,
                    task_class=cls,
                    served_model=served,
                    status="ok",
                    input_tokens=tin,
                    cached_input_tokens=tc,
                    cache_write_tokens=tw,
                    output_tokens=tout,
                    cost_nusd=None if cost is None else nusd_of_usd(cost),
                    decided_at=at,
                    created_at=at,
                )
            )
        for did, _cost, _shadow in GRADES:
            row = next(o for o in OUTCOMES if o[0] == did)
            s.add(
                Sample(
                    decision_id=did,
                    task_class=row[1],
                    model=row[4],
                    input_messages=[],
                    output_text="a",
                    status="graded",
                    decided_at=row[6],
                )
            )
        await s.flush()
        for did, cost, shadow in GRADES:
            row = next(o for o in OUTCOMES if o[0] == did)
            s.add(
                Grade(
                    decision_id=did,
                    task_class=row[1],
                    model=row[4],
                    reference_model="x",
                    grader="exact",
                    verdict="agree",
                    parse_status="ok",
                    cost_nusd=None if cost is None else nusd_of_usd(cost),
                    decided_at=row[6],
                    created_at=row[6],
                    shadow=shadow,
                )
            )
        await s.commit()
    await engine.dispose()


def _c(row: tuple[object, ...]) -> float:
    """The seeded cost of a priced outcome row."""
    cost = row[11]
    assert isinstance(cost, float)
    return cost


def _sonnet(tin: int, tc: int, tw: int, tout: int) -> float:
    return (tin * SONNET[0] + tc * SONNET[1] + tw * SONNET[2] + tout * SONNET[3]) / 1e6


async def test_cost_view_totals_and_groups_equal_the_seeded_rows(database_url: str) -> None:
    async with running_service(database_url, "default") as svc:
        await _seed(database_url)
        body = (await svc.client.get("/v1/costs", params={"group_by": "task_class,day"})).json()
    priced = [o for o in OUTCOMES if o[11] is not None]
    t = body["totals"]
    assert body["premium_model"] == "claude-3-5-sonnet"
    assert t["requests"] == 4 and t["unpriced"] == 1
    assert round(t["serving_usd"], 8) == round(sum(_c(o) for o in priced), 8)
    assert t["grading_usd"] == pytest.approx(0.004) and t["shadow_grading_usd"] == pytest.approx(
        0.03
    )
    expected_cf = sum(_sonnet(*o[7:11]) for o in priced)
    assert t["counterfactual_usd"] == pytest.approx(expected_cf)
    assert t["savings_usd"] == pytest.approx(expected_cf - sum(_c(o) for o in priced))
    assert t["premium_requests"] == 1 and t["premium_share"] == pytest.approx(0.25)
    assert t["input_tokens"] == 1380 and t["cached_input_tokens"] == 550
    # The exact amounts travel beside the USD numbers, and the totals are their sums.
    assert t["serving_nusd"] == sum(r["serving_nusd"] for r in body["rows"])
    assert t["grading_nusd"] + t["shadow_grading_nusd"] == 34_000_000
    rows = {(r["task_class"], r["day"]): r for r in body["rows"]}
    assert set(rows) == {
        ("classify", "2026-03-01"),
        ("classify", "2026-03-02"),
        ("code_generation", "2026-03-01"),
    }
    assert rows[("classify", "2026-03-02")]["unpriced"] == 1
    assert rows[("classify", "2026-03-02")]["requests"] == 2
    assert sum(r["serving_usd"] for r in rows.values()) == pytest.approx(t["serving_usd"])
    econ = {c["task_class"]: c for c in body["classes"]}
    code = econ["code_generation"]
    # r0 = 1 sampled / 1 request; S = sonnet counterfactual - serving = 0 (served on sonnet)
    assert code["savings_usd"] == pytest.approx(0.0, abs=1e-12)
    assert code["grading_exceeds_savings"] is True and code["break_even_rate"] == 0.0
    cls = econ["classify"]
    s_cls = sum(_sonnet(*o[7:11]) - _c(o) for o in priced if o[1] == "classify")
    assert cls["break_even_rate"] == pytest.approx((1 / 3) * s_cls / 0.004)


async def test_cost_view_by_caller_and_model_and_range(database_url: str) -> None:
    async with running_service(database_url, "default") as svc:
        await _seed(database_url)
        body = (
            await svc.client.get(
                "/v1/costs",
                params={"group_by": "caller,model", "since": "2026-03-02", "until": "2026-03-02"},
            )
        ).json()
        everything = (await svc.client.get("/v1/costs", params={"group_by": "caller"})).json()
    keys = {(r["caller"], r["model"]): r["requests"] for r in body["rows"]}
    assert keys == {("k2", "gpt-4o-mini"): 1, ("k1", "mystery-model"): 1}
    assert body["totals"]["grading_usd"] == 0.0
    assert all("day" not in r and "task_class" not in r for r in body["rows"])
    # A request without a key is its own group, caller null; its shadow probe is spend there.
    by_caller = {r["caller"]: r for r in everything["rows"]}
    assert set(by_caller) == {"k1", "k2", None}
    assert by_caller[None]["shadow_grading_usd"] == pytest.approx(0.03)
    assert by_caller["k1"]["grading_usd"] == pytest.approx(0.004)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "day,colour"}, "group_by"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-03-05", "until": "2026-03-01"}, "since"),
        ({"until": "9999-12-31"}, "until"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
    ],
)
async def test_bad_cost_queries_are_422_naming_the_field(
    database_url: str, params: dict[str, str], field: str
) -> None:
    async with running_service(database_url, "default") as svc:
        r = await svc.client.get("/v1/costs", params=params)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group-by", "colour"], "group_by"),
        (["--since", "2026-03-05", "--until", "2026-03-01"], "since"),
        (["--until", "soon"], "until"),
    ],
)
def test_bad_cost_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["costs", *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_costs_json_after_a_replay_equals_the_database_sums(database_url: str) -> None:
    url = database_url
    sets = [str(DATASETS / "mt_bench.jsonl"), str(DATASETS / "gsm8k.jsonl")]
    result = CliRunner().invoke(app, ["replay", *sets, "--per-class", "50", "--database-url", url])
    assert result.exit_code == 0, result.output
    out = CliRunner().invoke(
        app, ["costs", "--json", "--group-by", "task_class", "--database-url", url]
    )
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)

    async def sums() -> tuple[int, int, int, float]:
        engine = make_engine(url)
        async with session_factory(engine)() as s:
            outcomes = (await s.exec(select(Outcome))).all()
            grade_costs = (await s.exec(select(Grade.cost_nusd))).all()
        await engine.dispose()
        # replay.toml prices the premium gpt-4-1106-preview at 10.00 input / 30.00 output per 1M
        # (no cached or cache-write price: those fall back to the input price).
        premium = sum(
            (
                (o.input_tokens + o.cached_input_tokens + o.cache_write_tokens) * 10.00
                + o.output_tokens * 30.00
            )
            / 1e6
            for o in outcomes
            if o.cost_nusd is not None
        )
        return (
            sum(o.cost_nusd for o in outcomes if o.cost_nusd is not None),
            sum(c for c in grade_costs if c is not None),
            len(outcomes),
            premium,
        )

    serving, grading, n, premium = asyncio.run(sums())
    t = body["totals"]
    assert t["requests"] == n == 9 * 50
    # Exact: the totals are the integer sums of the rows' nano-USD costs.
    assert t["serving_nusd"] == serving and t["serving_usd"] == serving / 1e9
    assert t["grading_nusd"] + t["shadow_grading_nusd"] == grading
    assert round(t["counterfactual_usd"], 2) == round(premium, 2)
    assert round(t["savings_usd"], 2) == round(premium - serving / 1e9, 2)
    csv_out = CliRunner().invoke(app, ["costs", "--csv", "--database-url", url])
    assert csv_out.exit_code == 0 and csv_out.output.splitlines()[0].startswith("requests,")
    table = CliRunner().invoke(app, ["costs", "--group-by", "day", "--database-url", url])
    assert table.exit_code == 0 and "break-even" in table.output


def test_simulate_cost_review_equals_a_hand_computation() -> None:
    result = CliRunner().invoke(
        app, ["costs", "simulate", str(ROOT / "docs/workloads/cost-review.toml"), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    # default.toml (USD per 1M): gpt-4o 2.50/10.00; gpt-4o-mini 0.15/0.60; claude-3-5-haiku
    # 0.80/4.00; claude-3-5-sonnet 3.00/15.00; batch discount 0.5; embedding 0.02 (workload).
    before = [
        25000 * (400 * 2.50 + 50 * 10.00) / 1e6,  # 37.50
        12000 * (1900 * 2.50 + 300 * 10.00) / 1e6,  # 93.00
        8000 * (3000 * 2.50 + 500 * 10.00) / 1e6,  # 100.00
        3000 * (3000 * 2.50 + 1500 * 10.00) / 1e6,  # 67.50
        2000 * (2600 * 2.50 + 400 * 10.00) / 1e6,  # 21.00
    ]
    after = [
        8750 * (400 * 0.15 + 50 * 0.60) / 1e6 * 0.5 + 25000 * 400 * 0.02 / 1e6,  # 0.59375
        8160 * (1900 * 0.80 + 300 * 4.00) / 1e6 + 12000 * 1900 * 0.02 / 1e6,  # 22.6512
        4800 * (3000 * 0.80 + 500 * 4.00) / 1e6 * 0.5 + 8000 * 3000 * 0.02 / 1e6,  # 11.04
        2550 * (3000 * 3.00 + 1500 * 15.00) / 1e6 + 3000 * 3000 * 0.02 / 1e6,  # 80.505
        2000 * (2600 * 3.00 + 400 * 15.00) / 1e6,  # 27.60
    ]
    models = [
        "gpt-4o-mini",
        "claude-3-5-haiku",
        "claude-3-5-haiku",
        "claude-3-5-sonnet",
        "claude-3-5-sonnet",
    ]
    effective = [8750, 8160, 4800, 2550, 2000]
    assert body["before_usd_per_day"] == pytest.approx(319.00)
    assert body["after_usd_per_day"] == pytest.approx(sum(after))
    assert body["after_usd_per_day"] == pytest.approx(142.38995)
    for task, b, a, m, e in zip(body["tasks"], before, after, models, effective, strict=True):
        assert task["model_before"] == "gpt-4o" and task["model_after"] == m
        assert task["before_usd_per_day"] == pytest.approx(b)
        assert task["after_usd_per_day"] == pytest.approx(a)
        assert task["effective_requests_per_day"] == pytest.approx(e)
    assert set(body["tasks"][0]) == {
        "name",
        "model_before",
        "model_after",
        "requests_per_day",
        "effective_requests_per_day",
        "before_usd_per_day",
        "after_usd_per_day",
    }
    text = CliRunner().invoke(
        app, ["costs", "simulate", str(ROOT / "docs/workloads/cost-review.toml")]
    )
    assert text.exit_code == 0 and "assumptions:" in text.output and "$319.00" in text.output


GOOD = """baseline_model = "gpt-4o"
[[task]]
name = "a"
task_type = "classify"
requests_per_day = 10
input_tokens = 100
output_tokens = 10
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            GOOD + '\n[[task]]\nname = "b"\ntask_type = "x"\nrequests_per_day = 1\n'
            'input_tokens = 1\noutput_tokens = 1\n\n[[task]]\nname = "c"\ntask_type = "x"\n'
            "requests_per_day = 1\ninput_tokens = 1\noutput_tokens = 1\ncache_hit_rate = 1.5\n",
            "task[2].cache_hit_rate",
        ),
        (
            GOOD.replace("requests_per_day = 10", "requests_per_day = -1"),
            "task[0].requests_per_day",
        ),
        (GOOD.replace('baseline_model = "gpt-4o"', 'baseline_model = "gpt-9"'), "baseline_model"),
        (GOOD + "colour = 1\n", "task[0].colour"),
        ('baseline_model = "gpt-4o"\n', "task"),
        ("not toml = = ", "not valid TOML"),
    ],
)
def test_bad_workload_files_name_the_field_and_the_file(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "w.toml"
    path.write_text(body, encoding="utf-8")
    result = CliRunner().invoke(app, ["costs", "simulate", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    if message != "baseline_model":
        assert "w.toml" in result.output
