"""Graders on real rows from datasets/, through a real Provider.

Reference calls go through ``ReplayProvider`` (recorded answers and judgments) or through
``Scripted``, a tiny ``Provider`` subclass that returns scripted ``ChatResponse``s: a fake of the
provider boundary only. Nothing inside tierwise is patched.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from sqlmodel import col, select

from evaluator.datasets import HeldOutItem, load_held_out, load_judge_prompts, replay_provider
from evaluator.graders import GRADERS, GraderEnv, GradeResult, SampleView, add_usage
from evaluator.grading import grade_pending
from evaluator.models import Grade
from evaluator.report import class_reports
from router import policy as policy_mod
from router.errors import PolicyError
from router.models import Sample
from router.policy import ClassSettings, builtin_policy_path, parse_policy
from router.pricing import Usage
from router.providers.base import ChatRequest, ChatResponse, FinishReason, Provider
from tests.conftest import DATASETS, apply, running_service

CHEAP, REFERENCE = "mixtral-8x7b-instruct", "gpt-4-1106-preview"
CALL_USAGE = Usage(input_tokens=100, output_tokens=10)


class Scripted(Provider):
    """Answers each request with ``script(request)``: (text, finish reason). Records requests."""

    name = "scripted"

    def __init__(self, script: Callable[[ChatRequest], tuple[str, FinishReason]]) -> None:
        self.script = script
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        text, finish = self.script(request)
        return ChatResponse(text=text, model=request.model, finish_reason=finish, usage=CALL_USAGE)


def replies(*texts: str) -> Callable[[ChatRequest], tuple[str, FinishReason]]:
    """A script answering with ``texts`` in turn (finish reason ``stop``)."""
    queue = list(texts)
    return lambda _request: (queue.pop(0), "stop")


@cache
def judge_prompts() -> dict[str, dict[str, Any]]:
    return load_judge_prompts()


@cache
def rows(name: str) -> list[dict[str, Any]]:
    with (DATASETS / f"{name}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@cache
def held_out(name: str) -> dict[str, HeldOutItem]:
    return {i.id: i for i in load_held_out(DATASETS / f"{name}.jsonl").items}


def env_with(provider: Provider, items: dict[str, HeldOutItem] | None = None) -> GraderEnv:
    return GraderEnv(
        provider_for=lambda _m: provider, items=items or {}, judge_prompts=judge_prompts()
    )


def sample(messages: list[dict[str, Any]], output: str, item_id: str | None = None) -> SampleView:
    return SampleView("d-1", "test", CHEAP, messages, output, item_id)


def held_out_sample(item: HeldOutItem) -> SampleView:
    text = item.outputs[CHEAP].text
    assert text is not None
    return sample(item.messages, text, item_id=item.id)


def settings(**overrides: Any) -> ClassSettings:
    return ClassSettings(**overrides)


async def grade(grader: str, view: SampleView, env: GraderEnv, **overrides: Any) -> GradeResult:
    return await GRADERS[grader].grade(view, settings(grader=grader, **overrides), REFERENCE, env)


def intent_row(dataset: str, row_id: str) -> dict[str, Any]:
    return next(r for r in rows(dataset) if r["id"] == row_id)


def intent_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Classify the intent of: {row['text']}"}]


# ---- the registry ------------------------------------------------------------------------------


def test_every_grader_setting_has_a_grader_and_back() -> None:
    assert set(GRADERS) == set(typing.get_args(policy_mod.Grader))
    assert {"exact", "label", "json_fields", "numeric", "choice"} == set(
        typing.get_args(policy_mod.Compare)
    )


def test_grader_settings_load_from_a_policy_file() -> None:
    body = (
        builtin_policy_path("replay").read_text(encoding="utf-8")
        + """
[[classes]]
match = "intent.*"
grader = "reference_answer"
compare = "label"
labels = ["card_arrival", "exchange_rate"]
synonyms = { oos = ["out of scope"] }
numeric_tolerance = 0.01
json_fields = { "*.country" = "auto", "people" = "unordered" }
choice_letters = "ABCDE"
judge_kappa = 0.7
"""
    )
    s = parse_policy(body).settings_for("intent.bank")
    assert (s.grader, s.compare, s.labels, s.synonyms) == (
        "reference_answer",
        "label",
        ["card_arrival", "exchange_rate"],
        {"oos": ["out of scope"]},
    )
    assert (s.numeric_tolerance, s.choice_letters, s.judge_kappa, s.min_judge_kappa) == (
        0.01,
        "ABCDE",
        0.7,
        0.6,
    )
    assert s.json_fields == {"*.country": "auto", "people": "unordered"}
    with pytest.raises(PolicyError):
        parse_policy(body.replace('"ABCDE"', '"abc"'))
    with pytest.raises(PolicyError):
        parse_policy(body.replace('"unordered"', '"fuzzy"'))


# ---- exact / label on CLINC150 and BANKING77 ---------------------------------------------------


async def test_exact_normalises_case_whitespace_punctuation_on_clinc150() -> None:
    row = intent_row("clinc150", "clinc150/test/0")
    assert (row["text"], row["label"]) == ("how would you say fly in italian", "translate")
    messages = intent_messages(row)
    agree = await grade(
        "exact", sample(messages, "  Translate.\n"), env_with(Scripted(replies(row["label"])))
    )
    assert (agree.verdict, agree.parse_status, agree.raw_output) == ("agree", "ok", "translate")
    wrong = await grade(
        "exact", sample(messages, "travel_suggestion"), env_with(Scripted(replies(row["label"])))
    )
    assert (wrong.verdict, wrong.parse_status) == ("disagree", "ok")
    empty = await grade("exact", sample(messages, " "), env_with(Scripted(replies("translate"))))
    assert (empty.verdict, empty.parse_status) == ("disagree", "candidate_empty")


async def test_exact_uses_the_synonym_map_on_clinc150_out_of_scope() -> None:
    row = intent_row("clinc150", "clinc150/oos_test/0")
    assert row["label"] == "oos"
    env = env_with(Scripted(replies("oos", "oos")))
    view = sample(intent_messages(row), "Out-of-scope")
    assert (await grade("exact", view, env)).verdict == "disagree"
    synonyms = {"oos": ["out of scope", "none of the above"]}
    assert (await grade("exact", view, env, synonyms=synonyms)).verdict == "agree"


async def test_label_matches_whole_tokens_on_banking77() -> None:
    labels = sorted({r["label"] for r in rows("banking77")})
    assert len(labels) == 77
    row = intent_row("banking77", "banking77/80")
    assert (row["text"], row["label"]) == ("I need to know your exchange rates.", "exchange_rate")
    messages = intent_messages(row)

    async def label_of(output: str) -> GradeResult:
        env = env_with(Scripted(replies("Intent: exchange_rate")))
        return await grade("label", sample(messages, output), env, labels=labels)

    # "exchange rate" inside another label is that other label, not a match.
    inner = await label_of("card_payment_wrong_exchange_rate")
    assert (inner.verdict, inner.parse_status) == ("disagree", "ok")
    assert (await label_of("The customer asks about the exchange rate.")).verdict == "agree"
    assert (await label_of("EXCHANGE-RATE")).verdict == "agree"
    both = await label_of("exchange_rate or exchange_charge")
    assert (both.verdict, both.parse_status) == ("disagree", "candidate_ambiguous_label")
    none = await label_of("I am not sure.")
    assert (none.verdict, none.parse_status) == ("disagree", "candidate_no_label")


async def test_label_reference_without_a_label_is_invalid_and_synonyms_count() -> None:
    labels = sorted({r["label"] for r in rows("clinc150")})
    row = intent_row("clinc150", "clinc150/oos_test/0")
    messages = intent_messages(row)
    bad_ref = await grade(
        "label", sample(messages, "oos"), env_with(Scripted(replies("It depends."))), labels=labels
    )
    assert (bad_ref.verdict, bad_ref.parse_status) == ("invalid", "reference_no_label")
    syn = await grade(
        "label",
        sample(messages, "That request is out of scope."),
        env_with(Scripted(replies("oos"))),
        labels=labels,
        synonyms={"oos": ["out of scope"]},
    )
    assert (syn.verdict, syn.parse_status) == ("agree", "ok")


# ---- json_fields on MT-Bench extraction answers (recorded GPT-4 reference) -----------------------


def replay_env() -> GraderEnv:
    sets = [load_held_out(DATASETS / "mt_bench.jsonl"), load_held_out(DATASETS / "gsm8k.jsonl")]
    items = {**held_out("mt_bench"), **held_out("gsm8k")}
    return env_with(replay_provider(sets), items)


async def test_json_fields_on_recorded_mt_bench_extraction_rows() -> None:
    env = replay_env()
    # 137/1: same entities, keys "People" vs "people", GPT-4's JSON in a code fence.
    entities = held_out("mt_bench")["mt_bench/137/1"]
    assert "```json" in (entities.outputs[REFERENCE].text or "")
    got = await grade("json_fields", held_out_sample(entities), env)
    assert (got.verdict, got.parse_status, got.score) == ("agree", "ok", 1.0)
    # 131/1: "[5, 1, 3]" fenced vs bare.
    scores = await grade(
        "json_fields", held_out_sample(held_out("mt_bench")["mt_bench/131/1"]), env
    )
    assert (scores.verdict, scores.score) == ("agree", 1.0)
    # 135/1: Mixtral writes "Eldoria (fictional)" where GPT-4 writes "Eldoria".
    countries = held_out_sample(held_out("mt_bench")["mt_bench/135/1"])
    every = await grade(
        "json_fields", countries, env, json_fields={"*.country": "auto", "*.capital": "auto"}
    )
    assert (every.verdict, every.score) == ("disagree", 0.0)
    first = await grade(
        "json_fields",
        countries,
        env,
        json_fields={"0.country": "auto", "0.capital": "exact", "2.language": "auto"},
    )
    assert (first.verdict, first.score) == ("agree", 1.0)
    # 140/2: field names differ ("Highest Close" vs "Highest Closing Price") and numbers differ.
    prices = await grade(
        "json_fields",
        held_out_sample(held_out("mt_bench")["mt_bench/140/2"]),
        env,
        json_fields={"*.month": "auto", "*.lowest close": "numeric"},
    )
    assert (prices.verdict, prices.score) == ("disagree", 0.5)


async def test_json_fields_reference_without_json_is_invalid() -> None:
    item = held_out("mt_bench")["mt_bench/134/1"]  # GPT-4 answered in prose
    got = await grade("json_fields", held_out_sample(item), replay_env())
    assert (got.verdict, got.parse_status) == ("invalid", "reference_no_json")


# ---- numeric / reference_answer on GSM8K --------------------------------------------------------


async def test_numeric_on_recorded_gsm8k_rows() -> None:
    env = replay_env()
    item = held_out("gsm8k")["gsm8k/3"]  # both end in "#### 540"
    got = await grade("numeric", held_out_sample(item), env)
    assert (got.verdict, got.parse_status, got.score) == ("agree", "ok", 540.0)
    via = await grade("reference_answer", held_out_sample(item), env, compare="numeric")
    assert (via.verdict, via.score, via.raw_output) == (
        "agree",
        540.0,
        item.outputs[REFERENCE].text,
    )


async def test_numeric_tolerance_setting() -> None:
    item = held_out("gsm8k")["gsm8k/0"]
    assert item.gold == "18"
    view = sample(item.messages, "She makes 18.004 dollars.\n#### 18.004")

    async def with_tol(**tol: float) -> str:
        env = env_with(Scripted(replies("#### 18")))
        return (await grade("numeric", view, env, **tol)).verdict

    assert await with_tol() == "disagree"
    assert await with_tol(numeric_tolerance=0.001) == "agree"
    assert await with_tol(numeric_abs_tolerance=0.01) == "agree"
    truncated = await GRADERS["numeric"].grade(
        view,
        settings(grader="numeric"),
        REFERENCE,
        env_with(Scripted(lambda _r: ("The answer is 1", "length"))),
    )
    assert (truncated.verdict, truncated.parse_status) == ("invalid", "truncated")


# ---- choice on MMLU rows --------------------------------------------------------------------


async def test_choice_on_mmlu_rows() -> None:
    item = held_out_mmlu("mmlu/abstract_algebra/0")
    assert item.messages[0]["content"].endswith("D. 6\nAnswer:")

    async def choice(cheap: str, reference: str = "Answer: B") -> GradeResult:
        return await grade(
            "choice", sample(item.messages, cheap), env_with(Scripted(replies(reference)))
        )

    assert (await choice("The answer is (B).")).verdict == "agree"
    assert (await choice("B")).verdict == "agree"
    # Last anchored statement wins: the model changed its mind.
    assert (await choice("Answer: B. On reflection, the answer is C.")).verdict == "disagree"
    no = await choice("A good question; I am not sure.")
    assert (no.verdict, no.parse_status) == ("disagree", "candidate_no_choice")
    refused = await choice("B", reference="I'm sorry, I can't help with that.")
    assert (refused.verdict, refused.parse_status) == ("refused", "reference_refused")
    five = await grade(
        "choice",
        sample(item.messages, "Answer: E"),
        env_with(Scripted(replies("(E)"))),
        choice_letters="ABCDE",
    )
    assert five.verdict == "agree"


@cache
def held_out_mmlu(item_id: str) -> HeldOutItem:
    row = next(r for r in rows("mmlu") if r["id"] == item_id)
    return HeldOutItem(row["id"], row["dataset"], row["task_type"], row["messages"], None, None, {})


# ---- judge_single (recorded MT-Bench judgments) -----------------------------------------------


async def test_judge_single_replays_the_recorded_mt_bench_verdict() -> None:
    item = held_out("mt_bench")["mt_bench/81/1"]
    judge = item.outputs[CHEAP].judge
    assert judge is not None and judge.score is not None
    got = await grade("judge_single", held_out_sample(item), replay_env(), pass_mark=7)
    assert (got.score, got.parse_status) == (judge.score, "ok")
    assert got.verdict == ("agree" if judge.score >= 7 else "disagree")


# ---- judge_pairwise (position bias is a tie) --------------------------------------------------


def pairwise_script(answer: str, judge: Callable[[str, str], str]) -> Provider:
    """The reference answers ``answer``; as judge it replies ``judge(answer_a, answer_b)``."""

    def script(request: ChatRequest) -> tuple[str, FinishReason]:
        if request.system is None:
            return answer, "stop"
        prompt = str(request.messages[-1]["content"])
        a = prompt.split("[The Start of Assistant A's Answer]\n", 1)[1].split("\n[The End", 1)[0]
        b = prompt.split("[The Start of Assistant B's Answer]\n", 1)[1].split("\n[The End", 1)[0]
        return judge(a, b), "stop"

    return Scripted(script)


def mt_bench_turn1() -> tuple[SampleView, str]:
    item = held_out("mt_bench")["mt_bench/81/1"]
    reference = item.outputs[REFERENCE].text
    assert reference is not None
    return held_out_sample(item), reference


async def test_pairwise_asks_the_reference_first_then_judges_both_orders() -> None:
    view, reference = mt_bench_turn1()
    provider = pairwise_script(
        reference,
        lambda a, b: "B is better. [[B]]" if a == view.output_text else "A is better. [[A]]",
    )
    got = await grade("judge_pairwise", view, env_with(provider))
    assert (got.verdict, got.parse_status, got.score, got.position_flip) == (
        "disagree",
        "ok",
        0.0,
        False,
    )
    answer_call, first, second = provider.requests  # type: ignore[attr-defined]
    assert answer_call.messages == view.input_messages and answer_call.system is None
    template = judge_prompts()["pair-v2"]
    assert first.system == template["system_prompt"] == second.system
    assert first.messages[0]["content"] == template["prompt_template"].format(
        question=view.input_messages[0]["content"], answer_a=view.output_text, answer_b=reference
    )
    assert second.messages[0]["content"] == template["prompt_template"].format(
        question=view.input_messages[0]["content"], answer_a=reference, answer_b=view.output_text
    )
    assert got.usage == Usage(input_tokens=300, output_tokens=30)
    assert reference in got.raw_output


async def test_pairwise_position_bias_is_a_tie_with_a_recorded_flip() -> None:
    view, reference = mt_bench_turn1()
    # Position bias: the judge prefers whatever is shown first, in both orders.
    got = await grade(
        "judge_pairwise",
        view,
        env_with(
            pairwise_script(reference, lambda _a, _b: "Assistant A is clearly better.\n[[A]]")
        ),
    )
    assert (got.verdict, got.parse_status, got.score, got.position_flip) == (
        "agree",
        "position_flip",
        0.5,
        True,
    )


@pytest.mark.parametrize(
    ("judgment", "verdict", "score"),
    [("[[C]]", "agree", 0.5), ("cheap", "agree", 1.0)],
)
async def test_pairwise_consistent_tie_and_cheap_win_agree(
    judgment: str, verdict: str, score: float
) -> None:
    view, reference = mt_bench_turn1()

    def judge(a: str, _b: str) -> str:
        if judgment != "cheap":
            return f"Both fine. {judgment}"
        # Last match wins: "[[B]]" is quoted first, the verdict comes last.
        return "Format: [[A]] or [[B]]. Verdict: " + ("[[A]]" if a == view.output_text else "[[B]]")

    got = await grade("judge_pairwise", view, env_with(pairwise_script(reference, judge)))
    assert (got.verdict, got.parse_status, got.score, got.position_flip) == (
        verdict,
        "ok",
        score,
        False,
    )


async def test_pairwise_without_a_verdict_is_invalid_and_books_every_call() -> None:
    view, reference = mt_bench_turn1()
    provider = pairwise_script(reference, lambda _a, _b: "Both answers have merit [[AB]].")
    got = await grade("judge_pairwise", view, env_with(provider))
    assert (got.verdict, got.parse_status) == ("invalid", "no_verdict")
    # The reference answer, then both orders as one stage: all three calls are paid for.
    requests = provider.requests  # type: ignore[attr-defined]
    assert len(requests) == 3 and got.usage == add_usage(CALL_USAGE, CALL_USAGE, CALL_USAGE)
    # The judge refuses: refused, not a verdict.
    judge_refuses = pairwise_script(reference, lambda _a, _b: "I cannot judge these answers.")
    refused = await grade("judge_pairwise", view, env_with(judge_refuses))
    assert (refused.verdict, refused.parse_status) == ("refused", "refused")
    # The reference model refuses to answer (provider-side refusal): nothing to compare with.
    no_answer = Scripted(lambda r: ("", "refusal"))
    refused = await grade("judge_pairwise", view, env_with(no_answer))
    assert (refused.verdict, refused.parse_status) == ("refused", "reference_refused")
    assert len(no_answer.requests) == 1


async def test_pairwise_second_turn_uses_the_multi_turn_template() -> None:
    item = held_out("mt_bench")["mt_bench/81/2"]
    view = held_out_sample(item)
    provider = Scripted(lambda r: ("Own answer." if r.system is None else "[[C]]", "stop"))
    got = await grade("judge_pairwise", view, env_with(provider))
    assert got.verdict == "agree"
    judged = provider.requests[1].messages[0]["content"]
    template = judge_prompts()["pair-v2-multi-turn"]
    users = [m["content"] for m in item.messages if m["role"] == "user"]
    first_answer = next(m["content"] for m in item.messages if m["role"] == "assistant")
    assert judged == template["prompt_template"].format(
        question_1=users[0],
        question_2=users[1],
        answer_a_1=first_answer,
        answer_a_2=view.output_text,
        answer_b_1=first_answer,
        answer_b_2="Own answer.",
    )


# ---- no verdict in the grading job: retried once, stored once, counted per class -----------------


J2_POLICY = (
    builtin_policy_path("replay").read_text(encoding="utf-8")
    + """
[[classes]]
match = "j2_check"
grader = "judge_single"
sample_rate = 1.0
judge_kappa = 0.7
"""
)


async def sampled_decision(svc: Any, request_id: str) -> str:
    messages = [{"role": "user", "content": "Write a haiku about tea."}]
    route = (
        await svc.client.post(
            "/v1/route",
            json={"task_type": "j2_check", "messages": messages, "request_id": request_id},
        )
    ).json()
    assert route["sampled"] is True and route["model"] == CHEAP
    resp = await svc.client.post(
        "/v1/outcomes",
        json=[
            {
                "decision_id": route["decision_id"],
                "served_model": CHEAP,
                "status": "ok",
                "usage": {"prompt_tokens": 10, "completion_tokens": 20},
                "input_messages": messages,
                "output_text": "Steam curls, leaves unfold.",
            }
        ],
    )
    resp.raise_for_status()
    return str(route["decision_id"])


async def test_no_verdict_is_retried_once_and_stored_once(database_url: str) -> None:
    async with running_service(database_url, policy=None) as svc:
        await apply(svc.sessions, parse_policy(J2_POLICY))
        await svc.router.refresh(force=True)
        retried_ok = await sampled_decision(svc, "j2-retry-ok-1")
        retried_bad = await sampled_decision(svc, "j2-retry-bad-2")
        # First run: every judge reply refuses, so both samples go back to the queue once.
        run = await grade_pending(
            svc.sessions,
            env_with(Scripted(replies("I cannot evaluate this", "I cannot evaluate this"))),
            max_batches=1,
        )
        assert (run.claimed, run.retried, run.graded) == (2, 2, 0)
        # Second run: the retry gets a verdict, which is final and stored once.
        run = await grade_pending(
            svc.sessions, env_with(Scripted(replies("Rating: [[8]]", "Rating: [[8]]")))
        )
        assert (run.claimed, run.retried, run.graded, run.verdicts) == (2, 0, 2, {"agree": 2})
        async with svc.sessions() as session:
            grades = (await session.exec(select(Grade).order_by(col(Grade.decision_id)))).all()
            samples = (await session.exec(select(Sample))).all()
        assert len(grades) == 2 and {g.decision_id for g in grades} == {retried_ok, retried_bad}
        for g in grades:
            assert (g.verdict, g.parse_status, g.score) == ("agree", "ok", 8.0)
            # Both attempts' tokens and spend: 2 x (100 in at 10 USD/M + 10 out at 30 USD/M).
            assert (g.input_tokens, g.output_tokens) == (200, 20)
            assert g.cost_nusd == 2 * (100 * 10_000 + 10 * 30_000)  # nano-USD
        for s in samples:
            assert s.status == "graded"
            assert (s.earlier_verdict, s.earlier_input_tokens, s.meta) == ("refused", 100, None)
        # Nothing left to grade; no second row.
        again = await grade_pending(svc.sessions, env_with(Scripted(replies())))
        assert again.claimed == 0


async def test_no_verdict_second_failure_is_final_and_counted_per_class(database_url: str) -> None:
    async with running_service(database_url, policy=None) as svc:
        await apply(svc.sessions, parse_policy(J2_POLICY))
        await svc.router.refresh(force=True)
        decision = await sampled_decision(svc, "j2-final-fail-1")
        provider = Scripted(lambda _r: ("Rating: [[8", "length"))
        run = await grade_pending(svc.sessions, env_with(provider))
        assert (run.claimed, run.retried, run.graded, run.verdicts) == (2, 1, 1, {"invalid": 1})
        assert len(provider.requests) == 2
        async with svc.sessions() as session:
            grades = (await session.exec(select(Grade))).all()
            reports = {r.task_class: r for r in await class_reports(session)}
        assert [(g.decision_id, g.verdict, g.parse_status) for g in grades] == [
            (decision, "invalid", "truncated")
        ]
        report = reports["j2_check"]
        assert (report.graded_total, report.invalid_total, report.invalid_rate) == (0, 1, 1.0)
        assert report.no_verdict == {"truncated": 1}
        assert report.state.decision.estimate.n == 0  # kept out of the disagreement rate


async def test_graders_state_their_calls_in_stages_without_calling_a_provider() -> None:
    """Phase one of every grader is pure: it names the calls it needs (each to be answered by
    the real-time job or a batch), then turns the answers into a verdict."""
    from evaluator.graders import Stage

    class NoCalls(Provider):
        async def complete(self, request: ChatRequest) -> ChatResponse:
            raise AssertionError("a grader called a provider itself")

    view, reference = mt_bench_turn1()
    env = env_with(NoCalls())
    stages = {}
    for name, grader in GRADERS.items():
        first = grader.step(view, settings(grader=name), REFERENCE, env, {})
        stages[name] = sorted(first.requests) if isinstance(first, Stage) else first.verdict
        if isinstance(first, Stage):
            assert {r.model for r in first.requests.values()} == {REFERENCE}
    assert stages == {
        "exact": ["reference"],
        "label": ["reference"],
        "json_fields": ["reference"],
        "numeric": ["reference"],
        "choice": ["reference"],
        "reference_answer": ["reference"],
        "judge_single": ["judge"],
        "judge_pairwise": ["reference"],
        "recorded_correctness": "invalid",  # no recorded correctness for MT-Bench: no call
    }
    own = ChatResponse(reference, REFERENCE, "stop", CALL_USAGE)
    second = GRADERS["judge_pairwise"].step(
        view, settings(grader="judge_pairwise"), REFERENCE, env, {"reference": own}
    )
    assert isinstance(second, Stage) and sorted(second.requests) == ["judge_A", "judge_B"]
