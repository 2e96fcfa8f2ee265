"""``tierwise eval`` live: candidates answer through the provider registry (the OpenAI and
Anthropic SDKs against the loopback wire servers), the reference's own answer is handed to the
grader instead of being asked again, and a run interrupted halfway resumes from its results log
without asking (or paying for) anything twice: the upstream calls are counted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from evaluator.datasets import scan_held_out
from evaluator.evaluation import EvalSpec, ResultsLog, build_report, run_eval
from router.policy import parse_policy
from tests.conftest import make_settings
from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Hit,
    Reply,
    WireServer,
    anthropic_message,
    anthropic_usage,
    openai_chat,
    openai_usage,
    structured_request,
    verdict_reply,
)
from tierwise.planes import live_registry

POLICY = """
name = "live-eval"
premium_model = "big"
ladder = ["mini", "big"]
[tier_models]
trivial = "mini"
standard = "mini"
complex = "mini"
critical = "big"
[[models]]
name = "mini"
provider = "openai"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
[[models]]
name = "big"
provider = "anthropic"
api_model = "big-2025-01-01"
input_usd_per_mtok = 3.00
output_usd_per_mtok = 15.00
[defaults]
reference_model = "big"
"""
ITEMS = 8  # per class: 8 "calc" items (numeric) and 8 "chat" items (judge_single)
CALLS = ITEMS * 2 + ITEMS * (2 + 2)  # answers of both models; chat: two judge calls


class Interrupted(Exception):
    """Stands for the process being stopped between two items."""


def write_set(folder: Path) -> Path:
    rows = []
    for i in range(ITEMS):
        rows.append(
            {
                "id": f"live/calc/{i}",
                "dataset": "live",
                "task_type": "calc",
                "messages": [{"role": "user", "content": f"calc {i}: what is {i} + {i}?"}],
                "gold": str(2 * i),
            }
        )
    for i in range(ITEMS):
        rows.append(
            {
                "id": f"live/chat/{i}",
                "dataset": "live",
                "task_type": "chat",
                "messages": [{"role": "user", "content": f"chat {i}: write a haiku"}],
            }
        )
    path = folder / "live.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    manifest = [
        {
            "name": "live",
            "file": "live.jsonl",
            "kind": "held_out",
            "graders": [
                {"match": "calc", "grader": "numeric"},
                {"match": "chat", "grader": "judge_single", "pass_mark": 7},
            ],
        }
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def respond(hit: Hit) -> Reply:
    body = hit.body
    if structured_request(hit) is not None:  # a judge call: mini's haiku rates 5, big's 9
        prompt = json.dumps(body["messages"])
        rating = 5 if "MINI-HAIKU" in prompt else 9
        return verdict_reply(hit, {"explanation": "ok", "rating": rating})
    text = str(body["messages"][-1]["content"])
    n = int(re.findall(r"\d+", text)[0])
    if hit.path == OPENAI_PATH:  # mini: right on even items only
        right = 2 * n if n % 2 == 0 else 2 * n + 1
        answer = f"mini: #### {right}" if text.startswith("calc") else "MINI-HAIKU"
        return Reply(body=openai_chat(answer, usage=openai_usage(100, 20), model="mini"))
    answer = f"big: #### {2 * n}" if text.startswith("calc") else "big haiku"
    return Reply(body=anthropic_message(answer, usage=anthropic_usage(200, 40), model="big"))


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        server.respond(OPENAI_PATH, respond)
        server.respond(ANTHROPIC_PATH, respond)
        yield server


async def test_an_interrupted_live_eval_resumes_without_paying_twice(
    tmp_path: Path, wire: WireServer
) -> None:
    scan = scan_held_out(write_set(tmp_path))
    assert scan.held_out is not None and not scan.errors
    policy = parse_policy(POLICY)
    settings = make_settings(
        "sqlite+aiosqlite:///unused.db",
        reference_provider="catalog",
        openai_base_url=wire.openai_base_url,
        openai_api_key=SecretStr("sk-wire"),
        anthropic_base_url=wire.anthropic_base_url,
        anthropic_api_key=SecretStr("sk-wire"),
        provider_max_retries=0,
    )
    spec = EvalSpec([scan.held_out], ["mini", "big"], "big", policy, live=True, concurrency=1)
    results = tmp_path / "out" / "results.jsonl"

    done = 0

    def stop_after_five() -> None:
        nonlocal done
        done += 1
        if done == 5:
            raise Interrupted

    registry = live_registry(settings, lambda: policy.prices)
    log = ResultsLog(results)
    with pytest.raises(Interrupted):
        await run_eval(
            spec,
            log,
            answer_provider=registry.for_model,
            grading_provider=registry.for_model,
            on_item=stop_after_five,
        )
    log.close()
    first = len(wire.hits())
    assert first == 5 * 2  # five calc items: two answers each, the reference's reused to grade
    with results.open("ab") as handle:  # and the crash left half a line behind
        handle.write(b'{"kind": "answer", "item": "live/ca')

    log = ResultsLog(results)
    assert (len(log.answers), len(log.grades)) == (10, 10)
    run = await run_eval(
        spec, log, answer_provider=registry.for_model, grading_provider=registry.for_model
    )
    report = build_report(spec, log, run, seconds=0.0)
    log.close()
    await registry.aclose()

    assert len(wire.hits()) == CALLS
    assert run.live_calls == CALLS - first
    assert (run.resumed_answers, run.resumed_grades) == (10, 10)
    assert run.failures == []
    judge_calls = [h for h in wire.hits() if structured_request(h) is not None]
    assert len(judge_calls) == 2 * ITEMS
    anthropic = wire.hits(ANTHROPIC_PATH)
    assert {h.body["model"] for h in anthropic} == {"big-2025-01-01"}  # the catalog's api_model

    rows = {(r.task_class, r.model): r for r in report.rows}
    calc, chat = rows[("calc", "mini")], rows[("chat", "mini")]
    assert (calc.disagree, calc.graded, calc.accuracy.k if calc.accuracy else None) == (4, 8, 4)
    assert rows[("calc", "big")].accuracy is not None
    assert rows[("calc", "big")].accuracy.k == 8
    assert (chat.disagree, chat.graded, chat.mean_score) == (8, 8, 5.0)
    assert rows[("chat", "big")].mean_score == 9.0
    # Serving cost: 8 answers of 100 + 20 tokens at 0.15 / 0.60 USD per 1M tokens.
    assert (calc.input_tokens, calc.output_tokens) == (800, 160)
    assert calc.cost_nusd == 8 * (100 * 150 + 20 * 600)
    # Grading cost of mini's chat answers: one judge call of big each (the wire's tool-use
    # reply reports 100 + 20 tokens), at 3 / 15 USD per 1M tokens.
    assert chat.grading_cost_nusd == 8 * (100 * 3000 + 20 * 15000)
    lines = [json.loads(x) for x in results.read_text(encoding="utf-8").split("\n") if x]
    assert len(lines) == 2 * 2 * ITEMS * 2  # one answer and one grade per (item, model)
    assert len({(r["kind"], r["item"], r["model"]) for r in lines}) == len(lines)
