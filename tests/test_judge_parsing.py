"""Reading verdicts out of judge text: 1-10 ratings, replies without a verdict and the
pairwise, multiple-choice, label and JSON parsers the graders use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evaluator.graders import GRADERS
from evaluator.parsing import (
    ParsedChoice,
    ParsedJson,
    ParsedLabel,
    ParsedPairwise,
    ParsedRating,
    extract_json,
    find_label,
    normalize_answer,
    parse_choice,
    parse_pairwise,
    parse_pairwise_json,
    parse_rating,
    parse_rating_json,
    synonym_map,
)
from router.policy import ClassSettings
from router.providers.base import ChatRequest, FinishReason
from tests.test_graders import REFERENCE, Scripted, env_with, intent_row, replies, rows, sample

# ---- reading a 1-10 rating: every example in docs/field-cases.md, exact values -----------------


@pytest.mark.parametrize(
    ("text", "score", "status"),
    [
        ("Rating: [[8]]\n...more text", 8.0, "ok"),
        ("On a scale of 1 to 10, I rate this 8", 8.0, "ok"),
        ("Score: 8/10", 8.0, "ok"),
        ("[[90]]", None, "out_of_range"),  # out of range, not 10
        ("0.8", None, "no_rating"),  # not a rating on a 1-10 scale
        ("[[7]] ... later says 7/10", 7.0, "ok"),
    ],
)
def test_rating_examples(text: str, score: float | None, status: str) -> None:
    parsed = parse_rating(text)
    assert (parsed.score, parsed.status) == (score, status)


@pytest.mark.parametrize(
    ("text", "score", "status"),
    [
        ("[[3]] at first, but on reflection: Rating: [[6]]", 6.0, "ok"),  # last match
        ("[[7]] ... although 3/10 would be harsh", 7.0, "ok"),  # [[N]] beats fallbacks
        ("Score: 85", None, "out_of_range"),  # whole number, not the 8 of 85
        ("Score: 0.8", None, "out_of_range"),
        ("Rating: -1", None, "out_of_range"),
        ("I would rate this response a 7.", 7.0, "ok"),
        ("Rating: 8.5/10", 8.5, "ok"),
        ("The answer mentions 3 cities and 10 rivers.", None, "no_rating"),  # unanchored numbers
        ("[[ 9 ]]", 9.0, "ok"),
    ],
)
def test_rating_anchors_last_match_and_ranges(text: str, score: float | None, status: str) -> None:
    parsed = parse_rating(text)
    assert (parsed.score, parsed.status) == (score, status)


# ---- a judge reply without a verdict ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "finish", "status"),
    [
        ("I cannot evaluate this", "stop", "refused"),
        ("", "stop", "empty"),
        ("   \n", "stop", "empty"),
        ("The answer is thorough and Rating: [[8", "length", "truncated"),
        ("Rating: [[8]]", "length", "truncated"),  # cut off: the verdict may not be the last
        ("", "refusal", "refused"),  # provider-side refusal
        ("I'm sorry, but I can't help with that.", "stop", "refused"),
        ("The response is good overall.", "stop", "no_rating"),
    ],
)
def test_no_verdict_statuses(text: str, finish: FinishReason, status: str) -> None:
    assert parse_rating(text, finish_reason=finish) == ParsedRating(None, status)


@pytest.mark.parametrize(
    ("text", "finish", "verdict", "status"),
    [
        ("I cannot evaluate this", "stop", "refused", "refused"),
        ("", "stop", "invalid", "empty"),
        ("Rating: [[8", "length", "invalid", "truncated"),
        ("", "refusal", "refused", "refused"),
        ("[[90]]", "stop", "invalid", "out_of_range"),
    ],
)
async def test_no_verdict_judge_single_records_invalid_or_refused(
    text: str, finish: FinishReason, verdict: str, status: str
) -> None:
    provider = Scripted(lambda _r: (text, finish))
    view = sample([{"role": "user", "content": "Write a haiku about tea."}], "Steam rises.")
    got = await GRADERS["judge_single"].grade(
        view, ClassSettings(grader="judge_single"), REFERENCE, env_with(provider)
    )
    assert (got.verdict, got.parse_status, got.score, got.raw_output) == (
        verdict,
        status,
        None,
        text,
    )


# ---- pairwise verdicts (parsing) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "winner", "status"),
    [
        ("Assistant A is better. [[A]]", "A", "ok"),
        ('Output "[[A]]" if A is better, "[[B]]" if B... Final verdict: [[B]]', "B", "ok"),
        ("Both are equally good. [[C]]", "C", "ok"),
        ("[[AB]]", None, "no_verdict"),  # whole token only
        ("A is better.", None, "no_verdict"),
        ("I cannot judge this comparison.", None, "refused"),
        ("", None, "empty"),
    ],
)
def test_pairwise_parse(text: str, winner: str | None, status: str) -> None:
    parsed = parse_pairwise(text)
    assert (parsed.winner, parsed.status) == (winner, status)
    assert parse_pairwise("[[A]]", finish_reason="length").status == "truncated"


# ---- multiple choice --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("Answer: C", "C"),
        ("The answer is (C).", "C"),
        ("the correct option is D", "D"),
        ("Answer: **B**", "B"),
        ("Answer: A. Wait, no: the answer is B", "B"),  # last match
        ("(A) is wrong because ..., so (C)", "C"),
        ("C", "C"),
        ("C) 42", "C"),
        ("A good question. I cannot decide.", None),  # the article "A" is not a choice
        ("Answer: Cats are mammals", None),  # whole token: not the C of Cats
        ("the answer is a bit unclear", None),  # lower case never counts
        ("Answer: E", None),  # not among the letters
    ],
)
def test_choice_parse(text: str, letter: str | None) -> None:
    assert parse_choice(text).letter == letter


# ---- labels, normalisation, JSON ---------------------------------------------------------------


def test_normalize_and_synonyms() -> None:
    assert normalize_answer("  Card_Arrival.\n") == "card arrival"
    assert normalize_answer("Out-of-Scope!") == "out of scope"
    assert normalize_answer("3.5 apples") == "3.5 apples"
    syn = synonym_map({"oos": ["out of scope", "None of the above"]})
    assert syn == {"oos": "oos", "out of scope": "oos", "none of the above": "oos"}
    assert normalize_answer("None of the above.", syn) == "oos"
    with pytest.raises(ValueError, match="maps to both"):
        synonym_map({"a": ["x"], "b": ["X"]})


def test_find_label_whole_tokens() -> None:
    labels = ["balance", "bill_balance", "pto_balance"]
    assert find_label("Your bill balance", labels).label == "bill balance"
    assert find_label("intent: balance", labels).label == "balance"
    assert find_label("balanced diet", labels).status == "no_label"
    assert find_label("balance or pto balance", labels).status == "ambiguous_label"
    assert find_label("Translate.", None).label == "translate"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Here you go:\n```json\n{"a": 1}\n```\nAnything else?', {"a": 1}),
        ("```\n[1, 2]\n```", [1, 2]),
        ('The result is {"a": {"b": [1, 2]}} as requested.', {"a": {"b": [1, 2]}}),
        ('First {"a": 1}, corrected: {"a": 2}', {"a": 2}),  # last one
        ('{"release\\_date": "2022"}', {"release_date": "2022"}),  # markdown-escaped
    ],
)
def test_extract_json(text: str, value: Any) -> None:
    parsed = extract_json(text)
    assert (parsed.value, parsed.status) == (value, "ok")


def test_extract_json_without_json() -> None:
    assert extract_json("No JSON {here").status == "no_json"
    assert extract_json('{"a": 1', finish_reason="length").status == "truncated"


def test_brackets_nested_past_the_decoders_depth_are_no_json_not_a_crash() -> None:
    deep = "[" * 20000
    assert extract_json(deep) == ParsedJson(None, "no_json")
    assert extract_json(deep + ' then {"a": 1}') == ParsedJson({"a": 1}, "ok")
    assert parse_rating(deep + " Rating: [[6]]") == ParsedRating(6.0, "ok")


# ---- a labelled field wins over the free text around it ---------------------------------------

# The pairwise reply from the review: its explanation names B, A and "disagree"; its field says A.
PAIRWISE_REPLY = json.dumps(
    {
        "explanation": "Assistant B's answer is worse, A is better... the reference says disagree",
        "verdict": "A",
    }
)
AGREE = ["agree", "disagree"]


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"explanation": "Far better than the 3/10 draft.", "rating": 8}', 8.0),
        ('{"rating": 8, "explanation": "I first wrote Rating: [[3]]"}', 8.0),
        ("Rating: 8\nExplanation: a weaker answer would get 3/10.", 8.0),
        ("**Score:** 8/10\n\nI would rate this 4 if the dates were wrong.", 8.0),
        ("Final rating:\n9\n\n(The reference got 6 out of 10.)", 9.0),
        ("Explanation: the rubric's example says [[3]].\nRating: 8", 8.0),
    ],
)
def test_rating_labelled_field_wins_over_free_text(text: str, score: float) -> None:
    assert parse_rating(text) == ParsedRating(score, "ok")


def test_rating_labelled_field_without_a_number_is_passed_over() -> None:
    assert parse_rating("Rating: N/A, see below.\nI rate this 6.") == ParsedRating(6.0, "ok")
    assert parse_rating('{"rating": "8", "explanation": "x"} 5/10') == ParsedRating(5.0, "ok")


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        (PAIRWISE_REPLY, "A"),
        ('{"explanation": "Format: [[B]] if B is better.", "verdict": "A"}', "A"),
        ("Explanation: B is worse; I'd output [[B]] only if it fixed the dates.\nVerdict: A", "A"),
        ("Assistant A rambles, B is crisp.\n\n**Final verdict:** B", "B"),
        ("Both miss the point.\nVerdict:\nC", "C"),
    ],
)
def test_pairwise_labelled_field_wins_over_free_text(text: str, winner: str) -> None:
    assert parse_pairwise(text) == ParsedPairwise(winner, "ok")


def test_pairwise_review_example_reads_the_field_everywhere() -> None:
    assert parse_pairwise_json(PAIRWISE_REPLY) == ParsedPairwise("A", "ok")
    assert extract_json(PAIRWISE_REPLY).value["verdict"] == "A"
    # The same reply read as a binary label: only the field counts, not the explanation.
    assert find_label(
        '{"explanation": "the reference says disagree", "verdict": "agree"}', AGREE
    ) == ParsedLabel("agree", "ok")


@pytest.mark.parametrize(
    "text",
    [
        "Explanation: the answer does not agree with the reference on the date.\nVerdict: agree",
        "Explanation: I disagree with the grader's reading, but the facts match.\nVerdict: agree",
        "**Verdict:** Agree.\n\nThe graded answer would disagree only on style.",
        '{"explanation": "it does not disagree", "label": "agree"}',
    ],
)
def test_label_labelled_field_wins_over_free_text(text: str) -> None:
    assert find_label(text, AGREE) == ParsedLabel("agree", "ok")


def test_label_fields_last_one_naming_a_label_decides() -> None:
    labels = ["card_arrival", "exchange_rate"]
    text = "Intent: card_arrival\nNote: not exchange_rate, although the rate is mentioned."
    assert find_label(text, labels) == ParsedLabel("card arrival", "ok")
    assert find_label("Intent: unsure\nLabel: exchange_rate", labels).label == "exchange rate"
    # A field that names no label is passed over; the free text still counts then.
    assert find_label("Answer: see above. It is card_arrival.", labels).label == "card arrival"
    assert find_label("Verdict: agree or disagree", AGREE).status == "ambiguous_label"


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("Answer: B\n\nExplanation: Option A is wrong because 6 is not a generator.", "B"),
        ('{"explanation": "Option A is tempting, but ...", "answer": "B"}', "B"),
        ("The answer is (A)... no.\n**Final answer:** (C)", "C"),
        ("Answer: A. Wait, no: the answer is B", "B"),  # the field's own value, last match
    ],
)
def test_choice_labelled_field_wins_over_free_text(text: str, letter: str) -> None:
    assert parse_choice(text) == ParsedChoice(letter, "ok")


def test_extract_json_labelled_answer_wins_over_a_later_draft() -> None:
    text = 'Final answer: {"a": 2}\n(My first draft was {"a": 1}.)'
    assert extract_json(text) == ParsedJson({"a": 2}, "ok")
    assert extract_json('Answer:\n{"a": [1,\n 2]}\nnot {"a": 3}').value == {"a": [1, 2]}


# ---- JSON in code fences, read by every judge parser ------------------------------------------


def fenced(value: dict[str, Any]) -> list[str]:
    """``value`` in the fences judges write: ```json, bare ```, prose around it, on one line,
    upper-case tag, left open at the end."""
    body = json.dumps(value)
    return [
        f"```json\n{body}\n```",
        f"```\n{body}\n```",
        f"Here is my evaluation:\n\n```json\n{body}\n```\n\nHope this helps.",
        f"```json {body} ```",
        f"```JSON\n{json.dumps(value, indent=2)}\n```",
        f"```json\n{body}\n",
    ]


@pytest.mark.parametrize("text", fenced({"explanation": "Better than 3/10.", "rating": 8}))
def test_fenced_json_rating(text: str) -> None:
    assert parse_rating_json(text) == ParsedRating(8.0, "ok")
    assert parse_rating(text) == ParsedRating(8.0, "ok")


@pytest.mark.parametrize("text", fenced({"explanation": "[[B]]? no: B is worse.", "verdict": "A"}))
def test_fenced_json_pairwise(text: str) -> None:
    assert parse_pairwise_json(text) == ParsedPairwise("A", "ok")
    assert parse_pairwise(text) == ParsedPairwise("A", "ok")


@pytest.mark.parametrize("text", fenced({"explanation": "I disagree at first", "verdict": "agree"}))
def test_fenced_json_label_and_value(text: str) -> None:
    assert find_label(text, AGREE) == ParsedLabel("agree", "ok")
    assert extract_json(text).value == {"explanation": "I disagree at first", "verdict": "agree"}


def test_fenced_json_choice_and_other_languages() -> None:
    assert parse_choice(
        '```json\n{"explanation": "Option A fails", "answer": "D"}\n```'
    ).letter == ("D")
    # A fence of code that is not JSON gives no verdict of its own.
    code = "```python\nscore = {'x': 3}\n```\nRating: [[7]]"
    assert parse_rating(code) == ParsedRating(7.0, "ok")
    assert parse_rating_json(code) is None


class StructuredScripted(Scripted):
    """A scripted provider that claims structured output, so the judge reads the JSON first."""

    supports_structured_output = True


async def test_judges_read_fenced_json_verdicts() -> None:
    reply = (
        "```json\n" + json.dumps({"explanation": "Unlike a 3/10 answer...", "rating": 8}) + "\n```"
    )
    view = sample([{"role": "user", "content": "Write a haiku about tea."}], "Steam rises.")
    for provider, status in (
        (StructuredScripted(replies(reply)), "ok_structured"),
        (Scripted(replies(reply)), "ok"),
    ):
        got = await GRADERS["judge_single"].grade(
            view, ClassSettings(grader="judge_single", pass_mark=7), REFERENCE, env_with(provider)
        )
        assert (got.verdict, got.parse_status, got.score) == ("agree", status, 8.0)

    def judge(request: ChatRequest) -> tuple[str, FinishReason]:
        if request.system is None:
            return "Own answer.", "stop"
        cheap_first = "[The Start of Assistant A's Answer]\nSteam rises." in str(
            request.messages[-1]["content"]
        )
        winner = "A" if cheap_first else "B"  # the graded answer wins in both orders
        body = {"explanation": "Assistant B's answer is worse... or is it?", "verdict": winner}
        return "```json\n" + json.dumps(body) + "\n```", "stop"

    pair = await GRADERS["judge_pairwise"].grade(
        view, ClassSettings(grader="judge_pairwise"), REFERENCE, env_with(StructuredScripted(judge))
    )
    assert (pair.verdict, pair.parse_status, pair.score) == ("agree", "ok_structured", 1.0)


# ---- one verdict vocabulary: binary words, pairwise words, negation ----------------------------


@pytest.mark.parametrize(
    ("labels", "text", "label"),
    [
        (["pass", "fail"], "**Pass**", "pass"),
        (["pass", "fail"], "Verdict: FAIL.", "fail"),
        (["Pass", "Fail"], "pass!", "pass"),
        (["yes", "no"], "No.", "no"),
        (["yes", "no"], "Answer: **Yes**", "yes"),
        (["correct", "incorrect"], "Incorrect!", "incorrect"),
        (["correct", "incorrect"], "The answer is not correct.", "incorrect"),
        (["correct", "incorrect"], "It isn't entirely correct.", "incorrect"),
        (["correct", "incorrect"], "NOT CORRECT", "incorrect"),
        (["agree", "disagree"], "The graded answer doesn't agree with the reference.", "disagree"),
        (["agree", "disagree"], "Disagree.", "disagree"),
        (["pass", "fail"], "It does not pass: the date is wrong.", "fail"),
        (["pass", "fail"], "Pass. It does not fail any criterion.", "pass"),
        (["correct", "incorrect"], "Correct, not incorrect.", "correct"),
    ],
)
def test_binary_verdict_vocabularies(labels: list[str], text: str, label: str) -> None:
    assert find_label(text, labels) == ParsedLabel(label, "ok")


@pytest.mark.parametrize(
    ("labels", "text"),
    [
        (["correct"], "incorrect"),  # "incorrect" never matches "correct"
        (["agree"], "I disagree."),  # "disagree" never matches "agree"
        (["correct"], "not correct"),  # negated, and "incorrect" is not a label
        (["correct", "incorrect"], "It is not incorrect."),  # a negated negative names nothing
    ],
)
def test_negations_and_longer_words_never_read_as_the_word(labels: list[str], text: str) -> None:
    assert find_label(text, labels) == ParsedLabel(None, "no_label")


def test_negation_applies_to_verdict_words_only() -> None:
    # An intent is a topic: "I can't verify my identity" is about verifying one's identity
    # (a real BANKING77 row, labelled unable_to_verify_identity).
    row = intent_row("banking77", "banking77/1220")
    labels = sorted({r["label"] for r in rows("banking77")})
    assert row["text"] == "I can't verify my identity."
    assert find_label(row["text"], labels) == ParsedLabel("verify my identity", "ok")


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ("Output (a)", "A"),  # LLMBar
        ("Output (b).\n", "B"),
        ("**Output (B)**", "B"),
        ("1\n\n### Reason: Output 1 is concise and correct.", "A"),  # PandaLM
        ("2", "B"),
        ("Tie\n\nReason: both are fine.", "C"),
        ("Verdict: Assistant B.", "B"),
        ("Winner: output(a)", "A"),
        ("Verdict: tie", "C"),
        ("**Verdict:** [[A]]", "A"),
        ('{"verdict": "Output (b)"}', "B"),
        ('{"verdict": "**B**."}', "B"),
        ('{"verdict": "tie"}', "C"),
        ('{"winner": "2"}', "B"),
    ],
)
def test_pairwise_verdict_vocabularies(text: str, winner: str) -> None:
    assert parse_pairwise(text) == ParsedPairwise(winner, "ok")


@pytest.mark.parametrize(
    "text",
    [
        "A",  # a bare letter is no verdict on its own line ...
        "Verdict: a",  # ... and a lower-case letter never is
        "A is better.",
        "Output (a) and Output (b) are both fine.",
        "12 reasons to prefer B",
        "Verdict: A and B are equally good",
    ],
)
def test_pairwise_words_outside_the_vocabulary_are_no_verdict(text: str) -> None:
    assert parse_pairwise(text) == ParsedPairwise(None, "no_verdict")


def test_pairwise_json_vocabulary() -> None:
    for value, winner in (("Tie", "C"), ("Output (a)", "A"), ("Assistant B", "B"), ("1", "A")):
        assert parse_pairwise_json(json.dumps({"verdict": value})) == ParsedPairwise(winner, "ok")
    assert parse_pairwise_json('{"verdict": "a"}') is None  # letters in upper case only


def test_recorded_llmbar_completions_without_a_verdict_stay_without_one() -> None:
    # LLMBar's recorded completions whose verdict upstream is null (refusals, empty answers).
    seen = 0
    for row in rows("llmbar"):
        for judged in row["judges"].values():
            for run in judged.get("raw", {}).values():
                text, _upstream_finish = run["completion"]  # not a tierwise finish reason
                parsed = parse_pairwise(text, finish_reason="stop")
                assert parsed.winner is None, text
                assert parsed.status == ("empty" if not text else "refused"), text
                seen += 1
    assert seen == 24
