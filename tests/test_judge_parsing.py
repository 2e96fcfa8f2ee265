"""Reading verdicts out of judge text: field cases J1 (1-10 ratings), J2 (no verdict) and the
pairwise, multiple-choice, label and JSON parsers the graders use."""

from __future__ import annotations

from typing import Any

import pytest

from evaluator.graders import GRADERS
from evaluator.parsing import (
    ParsedJson,
    ParsedRating,
    extract_json,
    find_label,
    normalize_answer,
    parse_choice,
    parse_pairwise,
    parse_rating,
    synonym_map,
)
from evaluator.providers.base import FinishReason
from router.policy import ClassSettings
from tests.test_graders import REFERENCE, Scripted, env_with, sample

# ---- J1: every example of the field case, exact values -----------------------------------------


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
def test_j1_examples(text: str, score: float | None, status: str) -> None:
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
def test_j1_anchors_last_match_and_ranges(text: str, score: float | None, status: str) -> None:
    parsed = parse_rating(text)
    assert (parsed.score, parsed.status) == (score, status)


# ---- J2: no verdict ---------------------------------------------------------------------------


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
def test_j2_no_verdict_statuses(text: str, finish: FinishReason, status: str) -> None:
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
async def test_j2_judge_single_records_invalid_or_refused(
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


# ---- pairwise verdicts (J3 parsing) ---------------------------------------------------------


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
