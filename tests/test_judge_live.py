"""A judge measured live against human labels, end to end: ``tierwise eval judge --judge MODEL``
asks a catalog model through the provider registry (the official SDKs against a loopback
server speaking OpenAI's or Anthropic's wire format), reports agreement and kappa, writes the
kappa into a policy file as ``judge_calibration``; that policy applied, a stream of
disagreements escalates a judge-graded class, which it could not do before."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner, Result

from evaluator.calibration import may_escalate, uncalibrated_classes
from evaluator.escalation import run_escalation
from router.errors import PolicyError
from router.models import RoutingEntry
from router.policy import ClassSettings, builtin_policy_path, load_policy, parse_policy
from tests.conftest import DATASETS, apply
from tests.seeding import seed_grades
from tests.wire import ANTHROPIC_PATH, OPENAI_PATH, Hit, Reply, WireServer, verdict_reply
from tierwise.cli import app

N = 40  # items judged (the first 40 of LLMBar Natural: labels 1 or 2)
ITEMS = [json.loads(x) for x in (DATASETS / "llmbar.jsonl").open(encoding="utf-8")][:N]
_ANSWER_A = re.compile(
    r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A's Answer\]", re.S
)


def scripted_winner(i: int, first_is_output_1: bool) -> str:
    """The loopback judge: right on most items, wrong on every 10th (i % 10 == 0, in both
    orders), and position-biased on i % 10 == 5 (always "A": a flip)."""
    if i % 10 == 5:
        return "A"
    better_is_1 = ITEMS[i]["human"] == [1]
    if i % 10 == 0:
        better_is_1 = not better_is_1
    return "A" if better_is_1 == first_is_output_1 else "B"


def responder(hit: Hit) -> Reply:
    body: dict[str, Any] = hit.body
    content = body["messages"][-1]["content"]
    text = content if isinstance(content, str) else content[0]["text"]
    match = _ANSWER_A.search(text)
    assert match is not None, text[:300]
    answer_a = match.group(1)
    for i, item in enumerate(ITEMS):
        if item["input"] in text and answer_a in (item["output_1"], item["output_2"]):
            winner = scripted_winner(i, answer_a == item["output_1"])
            return verdict_reply(hit, {"explanation": "compared", "verdict": winner})
    raise AssertionError("the judge was asked about a pair it does not know")


def kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa of two label lists over the codes 0, 1, 2: (p_o - p_e) / (1 - p_e)."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pe = sum((a.count(c) / n) * (b.count(c) / n) for c in (0, 1, 2))
    return (po - pe) / (1 - pe)


def expected() -> dict[str, Any]:
    """From the script: per-order and both-orders verdicts (a flip is a tie, 0) against the
    labels, their kappas, the both-orders agreements and the flips."""
    human, v12s, v21s, both = [], [], [], []
    for i, item in enumerate(ITEMS):
        v12 = 1 if scripted_winner(i, True) == "A" else 2  # output_1 shown as A
        v21 = 2 if scripted_winner(i, False) == "A" else 1  # output_1 shown as B
        human.append(item["human"][0])
        v12s.append(v12)
        v21s.append(v21)
        both.append(v12 if v12 == v21 else 0)
    return {
        "order_12": kappa(human, v12s),
        "order_21": kappa(human, v21s),
        "both": kappa(human, both),
        "agree": sum(h == j for h, j in zip(human, both, strict=True)),
        "flips": sum(x != y for x, y in zip(v12s, v21s, strict=True)),
    }


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        server.respond(OPENAI_PATH, responder)
        server.respond(ANTHROPIC_PATH, responder)
        yield server


def tierwise(wire: WireServer, *args: str) -> Result:
    env = {
        "TIERWISE_REFERENCE_PROVIDER": "catalog",
        "TIERWISE_OPENAI_API_KEY": "sk-wire",
        "TIERWISE_OPENAI_BASE_URL": wire.openai_base_url,
        "TIERWISE_ANTHROPIC_API_KEY": "sk-ant-wire",
        "TIERWISE_ANTHROPIC_BASE_URL": wire.anthropic_base_url,
        "TIERWISE_PROVIDER_MAX_RETRIES": "0",
    }
    return CliRunner().invoke(app, list(args), env=env)


def policy_copy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(builtin_policy_path("default").read_text(encoding="utf-8"), encoding="utf-8")
    return path


def llmbar_subset(tmp_path: Path) -> Path:
    path = tmp_path / "llmbar40.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in ITEMS), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("judge", "path"), [("claude-3-5-sonnet", ANTHROPIC_PATH), ("gpt-4o", OPENAI_PATH)]
)
def test_a_live_judge_is_measured_and_recorded_in_the_policy(
    wire: WireServer, tmp_path: Path, judge: str, path: str
) -> None:
    policy = policy_copy(tmp_path)
    result = tierwise(
        wire,
        "eval", "judge", str(llmbar_subset(tmp_path)),
        "--judge", judge, "--write-policy", str(policy), "--concurrency", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = wire.hits(path)
    assert len(hits) == 2 * N and wire.hits() == hits  # both orders, each to its own API
    assert wire.max_in_flight <= 4
    # Structured verdicts, as judge_pairwise grading asks for them.
    assert all(("tools" in h.body) or ("response_format" in h.body) for h in hits)

    want = expected()
    agree, flips = want["agree"], want["flips"]
    written = tomllib.loads(policy.read_text(encoding="utf-8"))
    record = written["defaults"]["judge_calibration"]
    assert record["judge"] == judge
    # [defaults] grades with judge_single: one presentation, the lower per-order kappa.
    assert want["order_12"] != want["order_21"]
    assert record["kappa"] == round(min(want["order_12"], want["order_21"]), 4)
    assert record["ci_low"] < record["kappa"] < record["ci_high"]
    assert (record["n"], record["dataset"]) == (N, "llmbar")
    assert record["measured_on"] == datetime.now(UTC).date()
    text = policy.read_text(encoding="utf-8")
    assert text.startswith("# tierwise default routing policy")  # comments kept
    assert f"{agree}/{N}" in result.output and f"{flips}/{N}" in result.output
    assert f"- live: {2 * N} calls to {judge}" in result.output

    loaded = load_policy(policy)
    settings = loaded.settings_for("summarize")
    # The class judged by that model may escalate now; one judged by another may not.
    allowed, why = may_escalate(settings, loaded.reference_model("summarize"))
    assert allowed is (judge == "claude-3-5-sonnet"), why
    if judge != "claude-3-5-sonnet":
        assert "judge_calibration measured gpt-4o, but the class is judged by" in why


def test_a_pairwise_class_records_the_both_orders_kappa(wire: WireServer, tmp_path: Path) -> None:
    policy = policy_copy(tmp_path)
    policy.write_text(
        policy.read_text(encoding="utf-8")
        + '\n[[classes]]\nmatch = "summarize*"\ngrader = "judge_pairwise"\n',
        encoding="utf-8",
    )
    result = tierwise(
        wire, "eval", "judge", str(llmbar_subset(tmp_path)), "--judge", "claude-3-5-sonnet",
        "--write-policy", str(policy), "--classes", "summarize*",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [entry] = [
        c
        for c in tomllib.loads(policy.read_text(encoding="utf-8"))["classes"]
        if c["match"] == "summarize*"
    ]
    assert entry["grader"] == "judge_pairwise"  # the existing entry, updated
    assert entry["judge_calibration"]["kappa"] == round(expected()["both"], 4)


def test_policy_check_warns_for_every_uncalibrated_judge_class(
    wire: WireServer, tmp_path: Path
) -> None:
    policy = policy_copy(tmp_path)
    before = tierwise(wire, "policy", "check", str(policy))
    assert before.exit_code == 0
    assert "warning: class 'summarize' (judge_single, judge claude-3-5-sonnet) will never " in (
        before.output
    )
    assert len(uncalibrated_classes(load_policy(policy))) == 19  # 18 named classes + defaults
    result = tierwise(
        wire, "eval", "judge", str(llmbar_subset(tmp_path)), "--judge", "claude-3-5-sonnet",
        "--write-policy", str(policy), "--classes", "summarize*",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    after = tierwise(wire, "policy", "check", str(policy))
    warned = {line.split("'")[1] for line in after.output.splitlines() if "warning" in line}
    assert "summarize" not in warned and "summarize:large_or_tools" not in warned
    assert "classify" in warned and len(warned) == 17


def test_a_recorded_judge_is_recorded_as_the_model_it_stands_for(tmp_path: Path) -> None:
    policy = tmp_path / "replay.toml"
    policy.write_text(builtin_policy_path("replay").read_text(encoding="utf-8"), encoding="utf-8")
    args = ["eval", "judge", str(DATASETS / "llmbar.jsonl"), "--judge", "GPT-4/Vanilla_NoRules"]
    missing = CliRunner().invoke(app, [*args, "--write-policy", str(policy)])
    assert missing.exit_code == 2 and "record_as" in missing.output
    result = CliRunner().invoke(
        app, [*args, "--write-policy", str(policy), "--record-as", "gpt-4-1106-preview"]
    )
    assert result.exit_code == 0, result.output
    record = tomllib.loads(policy.read_text(encoding="utf-8"))["defaults"]["judge_calibration"]
    # [defaults] grades with judge_single: the lower per-order kappa, here the swapped order's,
    # over the 461 of its 466 items with a verdict in that order (460 output_1 first).
    assert (record["judge"], record["dataset"], record["n"]) == (
        "gpt-4-1106-preview",
        "llmbar",
        461,
    )
    subset = CliRunner().invoke(
        app,
        [*args, "--subset", "Processed/MT-Bench", "--write-policy", str(policy),
         "--record-as", "gpt-4-1106-preview", "--classes", "mt_bench.*"],
    )  # fmt: skip
    assert subset.exit_code == 0, subset.output
    [mt] = [
        c for c in tomllib.loads(policy.read_text(encoding="utf-8"))["classes"]
        if c["match"] == "mt_bench.*"
    ]  # fmt: skip
    # GPT-4 on the 200 MT-Bench pairs: 0.590 output_1 first, 0.650 swapped (replay.toml's note).
    assert (mt["judge_calibration"]["kappa"], mt["judge_calibration"]["n"]) == (0.5899, 200)
    assert mt["judge_calibration"]["dataset"] == "llmbar:Processed/MT-Bench"
    assert mt["judge_kappa"] == 0.62  # the hand-set figure stays; the measured one wins
    several = CliRunner().invoke(app, [*args[:-1], "GPT-4", "--write-policy", str(policy)])
    assert several.exit_code == 2 and "names 2 recorded judges" in several.output


def test_an_unknown_judge_is_named() -> None:
    result = CliRunner().invoke(
        app, ["eval", "judge", str(DATASETS / "pandalm.jsonl"), "--judge", "nobody"]
    )
    assert result.exit_code == 2
    assert "judge 'nobody' is neither recorded" in result.output


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('judge = "nobody", kappa = 0.7, n = 10, dataset = "x", measured_on = 2026-01-01',
         "defaults.judge_calibration.judge"),
        ('judge = "gpt-4o", kappa = 1.5, n = 10, dataset = "x", measured_on = 2026-01-01',
         "defaults.judge_calibration.kappa"),
        ('judge = "gpt-4o", kappa = 0.7, ci_low = 0.8, n = 10, dataset = "x", '
         "measured_on = 2026-01-01", "defaults.judge_calibration"),
        ('judge = "gpt-4o", kappa = 0.7, n = 10, dataset = "x", '
         "measured_on = 2026-01-01T00:00:00", "defaults.judge_calibration.measured_on"),
        ('judge = "gpt-4o", kappa = 0.7, n = 0, dataset = "x", measured_on = 2026-01-01',
         "defaults.judge_calibration.n"),
    ],
)  # fmt: skip
def test_a_bad_judge_calibration_names_the_key(extra: str, field: str) -> None:
    body = (
        builtin_policy_path("default")
        .read_text(encoding="utf-8")
        .replace("[defaults]\n", f"[defaults]\njudge_calibration = {{ {extra} }}\n")
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(body, source="p.toml")
    assert caught.value.field == field, caught.value


def test_calibration_wins_over_a_hand_set_kappa() -> None:
    settings = ClassSettings.model_validate(
        {
            "grader": "judge_single",
            "judge_kappa": 0.9,
            "judge_calibration": {
                "judge": "m", "kappa": 0.41, "n": 5, "dataset": "d", "measured_on": "2026-01-01"
            },
        }
    )  # fmt: skip
    ok, why = may_escalate(settings, "m")
    assert not ok and "kappa 0.41" in why and "on d (n=5, 2026-01-01)" in why


MINI, HAIKU = "gpt-4o-mini", "claude-3-5-haiku"


async def test_end_to_end_a_live_kappa_lets_a_judge_graded_class_escalate(
    sessions: async_sessionmaker[AsyncSession], wire: WireServer, tmp_path: Path
) -> None:
    policy = policy_copy(tmp_path)
    # Before: summarize (judge_single, judged by claude-3-5-sonnet) is blocked.
    await apply(sessions, load_policy(policy))
    await seed_grades(sessions, "summarize", HAIKU, n=400, k=40)
    run = await run_escalation(sessions)
    assert (run.escalated, run.blocked) == ([], ["summarize"])

    result = await asyncio.to_thread(
        tierwise, wire, "eval", "judge", str(llmbar_subset(tmp_path)),
        "--judge", "claude-3-5-sonnet", "--write-policy", str(policy),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "that may escalate: " in result.output and "summarize" in result.output

    await apply(sessions, load_policy(policy))
    await seed_grades(sessions, "summarize", HAIKU, n=400, k=40)  # 10%: well above 3%
    run = await run_escalation(sessions)
    assert run.escalated == ["summarize"]
    async with sessions() as session:
        entry = await session.get(RoutingEntry, "summarize")
    assert entry is not None and (entry.model, entry.status) == (
        "claude-3-5-sonnet",
        "escalated",
    )
