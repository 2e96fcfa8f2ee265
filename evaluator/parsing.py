"""Reading verdicts out of model text: judge ratings (field cases J1, J2) and final numbers.

Every parser returns a value *and* a parse status, so an unreadable reply is stored as such and
kept out of the disagreement rate instead of being guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUM = r"(-?\d+(?:\.\d+)?)"
# MT-Bench's own format (FastChat llm_judge: "[[rating]]"); the last one wins.
_BRACKETED = re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]")
# Fallbacks, each anchored to a word that says "this number is the rating".
_FALLBACKS = (
    re.compile(r"\brating\s*(?:is|of)?\s*[:=]?\s*\**\s*" + _NUM, re.IGNORECASE),
    re.compile(r"\bscore\s*(?:is|of)?\s*[:=]?\s*\**\s*" + _NUM, re.IGNORECASE),
    re.compile(r"\b(?:i\s+)?(?:would\s+)?rate\s+(?:this|it|the\s+\w+)\s+(?:a|an|as)?\s*" + _NUM,
               re.IGNORECASE),
    re.compile(_NUM + r"\s*/\s*10\b"),
    re.compile(_NUM + r"\s+out\s+of\s+10\b", re.IGNORECASE),
)
_REFUSAL = re.compile(
    r"\b(i\s*(?:cannot|can't|can not|am unable to|won't|will not)\s+(?:evaluate|rate|assess|"
    r"judge|provide|help|comply)|i'?m\s+sorry|as an ai\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ParsedRating:
    """``score`` is set only when ``status`` is ``ok``.

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_rating`` | ``out_of_range``.
    """

    score: float | None
    status: str


def parse_rating(
    text: str, *, low: float = 1, high: float = 10, finish_reason: str = "stop"
) -> ParsedRating:
    """The judge's rating on a ``low``..``high`` scale (J1/J2).

    ``[[N]]`` anywhere wins (last occurrence); otherwise the last of "Rating: N", "Score: N",
    "I rate this N", "N/10", "N out of 10". Out of range is ``out_of_range`` (never clamped:
    "[[90]]" is not 10, "0.8" is not 8). A reply cut off by the token limit is ``truncated``.
    """
    if finish_reason == "length":
        return ParsedRating(None, "truncated")
    if not text or not text.strip():
        return ParsedRating(None, "empty")
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        value = float(bracketed[-1])
    else:
        found: list[tuple[int, str]] = []
        for pattern in _FALLBACKS:
            found.extend((m.start(), m.group(1)) for m in pattern.finditer(text))
        if not found:
            status = "refused" if _REFUSAL.search(text) else "no_rating"
            return ParsedRating(None, status)
        value = float(max(found)[1])
    if not math.isfinite(value) or not low <= value <= high:
        return ParsedRating(None, "out_of_range")
    return ParsedRating(value, "ok")


_GSM_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_ANY_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _to_float(token: str) -> float | None:
    cleaned = token.replace(",", "").replace("$", "").replace(" ", "")
    try:
        return float(cleaned)
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The final numeric answer: the number after GSM8K's ``####`` marker, else the last number
    in the text (commas and ``$`` ignored). None when the text has no number."""
    marked = _GSM_FINAL.findall(text)
    if marked:
        return _to_float(marked[-1])
    numbers = _ANY_NUMBER.findall(text)
    for token in reversed(numbers):
        value = _to_float(token)
        if value is not None:
            return value
    return None


def numbers_match(a: float, b: float, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Equal within tolerance (``math.isclose``)."""
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
