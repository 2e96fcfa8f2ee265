"""Reading verdicts and answers out of model text.

Judge ratings (field cases J1, J2), pairwise verdicts (J3), multiple-choice letters, class labels,
JSON values and final numbers. Every parser returns a value *and* a parse status, so an
unreadable reply is stored as such and kept out of the disagreement rate instead of being guessed.

Shared rules:

- **Anchored**: a value counts only next to a marker that says "this is the verdict"
  (``[[8]]``, ``Rating: 8``, ``Answer: C``, ``[[A]]``), never any number or letter in the text.
- **Last match**: when a reply states its verdict more than once, the last statement wins (judges
  reason first and conclude last).
- **Whole token**: ``[[A]]`` is not ``[[AB]]``; the label ``card arrival`` is not inside
  ``card arrival delay``; ``C`` is not the ``C`` of ``Cats``.
- **No verdict (J2)**: a reply cut off by the token limit (finish reason ``length``) is
  ``truncated``; a provider-side refusal (finish reason ``refusal``) or a refusal sentence with no
  verdict is ``refused``; an empty reply is ``empty``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NUM = r"(-?\d+(?:\.\d+)?)"
# MT-Bench's own format (FastChat llm_judge: "[[rating]]"); the last one wins.
_BRACKETED = re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]")
# Fallbacks, each anchored to a word that says "this number is the rating".
_FALLBACKS = (
    re.compile(r"\brating\s*(?:is|of)?\s*[:=]?\s*\**\s*" + _NUM + r"(?![\d.]*\d)", re.IGNORECASE),
    re.compile(r"\bscore\s*(?:is|of)?\s*[:=]?\s*\**\s*" + _NUM + r"(?![\d.]*\d)", re.IGNORECASE),
    re.compile(
        r"\b(?:rate|give)\s+(?:this|it|that|the)(?:\s+\w+)?\s+(?:(?:a|an|as)\s+)?"
        + _NUM
        + r"(?![\d.]*\d)",
        re.IGNORECASE,
    ),
    re.compile(_NUM + r"\s*/\s*10\b"),
    re.compile(_NUM + r"\s+out\s+of\s+10\b", re.IGNORECASE),
)
_REFUSAL = re.compile(
    r"\b(i\s*(?:cannot|can't|can not|am unable to|won't|will not)\s+(?:evaluate|rate|assess|"
    r"judge|provide|help|comply|answer|grade)|i'?m\s+sorry|as an ai\b)",
    re.IGNORECASE,
)


def no_verdict_status(text: str, finish_reason: str = "stop") -> str | None:
    """Why a reply cannot carry a verdict at all, before any parsing (field case J2).

    Returns ``truncated`` (finish reason ``length``: the verdict may be cut off), ``refused``
    (finish reason ``refusal``: the provider refused), ``empty`` (no text), else None.
    """
    if finish_reason == "length":
        return "truncated"
    if finish_reason == "refusal":
        return "refused"
    if not text or not text.strip():
        return "empty"
    return None


def is_refusal(text: str) -> bool:
    """True when ``text`` contains a refusal sentence ("I cannot evaluate this", "I'm sorry").
    Only consulted when no verdict was found, so an apology before a verdict is harmless."""
    return _REFUSAL.search(text) is not None


def _missing(text: str, fallback: str) -> str:
    return "refused" if is_refusal(text) else fallback


# ---- 1-10 ratings (J1) ---------------------------------------------------------------------


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
    """The judge's rating on a ``low``..``high`` scale (field cases J1/J2).

    ``[[N]]`` anywhere wins (MT-Bench's format; last occurrence); otherwise the last of
    "Rating: N", "Score: N", "I rate this N", "N/10", "N out of 10". Out of range is
    ``out_of_range`` (never clamped: "[[90]]" is not 10); a bare "0.8" has no anchor and is
    ``no_rating``. See :func:`no_verdict_status` for ``truncated``/``refused``/``empty``.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedRating(None, missing)
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        value = float(bracketed[-1])
    else:
        found: list[tuple[int, str]] = []
        for pattern in _FALLBACKS:
            found.extend((m.start(1), m.group(1)) for m in pattern.finditer(text))
        if not found:
            return ParsedRating(None, _missing(text, "no_rating"))
        value = float(max(found)[1])
    if not math.isfinite(value) or not low <= value <= high:
        return ParsedRating(None, "out_of_range")
    return ParsedRating(value, "ok")


def _json_object(text: str) -> dict[str, Any] | None:
    """``text`` as one JSON object (surrounding whitespace allowed), else None. Structured
    replies are exactly the JSON (the adapters put nothing around it), so nothing embedded in
    prose or fences counts here; such replies go to the text parsers instead."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_rating_json(
    text: str, *, low: float = 1, high: float = 10, finish_reason: str = "stop"
) -> ParsedRating | None:
    """The rating of a structured judge reply ``{"explanation": str, "rating": int}``.

    None when ``text`` is not a JSON object with a numeric ``rating`` (missing, malformed, a
    string, a boolean): the caller then falls back to :func:`parse_rating` on the same text.
    The range check is :func:`parse_rating`'s: out of ``low``..``high`` (or not finite) is
    ``out_of_range``, never clamped. ``truncated``/``refused``/``empty`` come first, as
    there (:func:`no_verdict_status`).
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedRating(None, missing)
    obj = _json_object(text)
    rating = obj.get("rating") if obj is not None else None
    if isinstance(rating, bool) or not isinstance(rating, int | float):
        return None
    try:
        value = float(rating)
    except OverflowError:  # an int beyond float range
        return ParsedRating(None, "out_of_range")
    if not math.isfinite(value) or not low <= value <= high:
        return ParsedRating(None, "out_of_range")
    return ParsedRating(value, "ok")


# ---- pairwise verdicts (J3) ----------------------------------------------------------------

_PAIR = re.compile(r"\[\[\s*([ABC])\s*\]\]")


@dataclass(frozen=True, slots=True)
class ParsedPairwise:
    """``winner`` is ``A`` | ``B`` | ``C`` (tie), set only when ``status`` is ``ok``.

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_verdict``.
    """

    winner: str | None
    status: str


def parse_pairwise(text: str, *, finish_reason: str = "stop") -> ParsedPairwise:
    """MT-Bench pairwise verdict: the last ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie) in the text
    (format of FastChat's ``pair-v2`` judge prompt, ``llm_judge/data/judge_prompts.jsonl``).
    Only the exact bracketed token counts: ``[[AB]]`` or a bare "A" is ``no_verdict``."""
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedPairwise(None, missing)
    found = _PAIR.findall(text)
    if not found:
        return ParsedPairwise(None, _missing(text, "no_verdict"))
    return ParsedPairwise(str(found[-1]), "ok")


def parse_pairwise_json(text: str, *, finish_reason: str = "stop") -> ParsedPairwise | None:
    """The verdict of a structured pairwise reply ``{"explanation": str, "verdict": "A"|"B"|"C"}``.

    None when ``text`` is not a JSON object whose ``verdict`` is exactly ``A``, ``B`` or ``C``
    (the caller then falls back to :func:`parse_pairwise`). ``truncated``/``refused``/``empty``
    come first (:func:`no_verdict_status`).
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedPairwise(None, missing)
    obj = _json_object(text)
    verdict = obj.get("verdict") if obj is not None else None
    if verdict not in ("A", "B", "C"):
        return None
    return ParsedPairwise(str(verdict), "ok")


# ---- multiple choice -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedChoice:
    """``letter`` is set only when ``status`` is ``ok``.

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_choice``.
    """

    letter: str | None
    status: str


def _choice_patterns(letters: str) -> tuple[re.Pattern[str], ...]:
    cls = "[" + re.escape(letters) + "]"
    tok = r"(?<![\w])(" + cls + r")(?![\w])"
    anchored = re.compile(
        r"(?i:\banswer|\bchoice|\boption)(?i:\s+is|\s*:|\s*=|\s+would\s+be|\s+should\s+be)?"
        r"(?i:\s+option|\s+choice)?\s*[:\-]?\s*[\(\[*]*\s*" + tok
    )
    wrapped = re.compile(r"(?:\((" + cls + r")\)|\[(" + cls + r")\]|\*\*(" + cls + r")\*\*)")
    alone = re.compile(r"\A\s*[\(\[*]*(" + cls + r")(?:[\)\]*.:]|\s*\Z)")
    return anchored, wrapped, alone


def parse_choice(text: str, *, letters: str = "ABCD", finish_reason: str = "stop") -> ParsedChoice:
    """The multiple-choice letter a reply picks, from ``letters`` (upper case only).

    Tried in order, the first tier that matches decides, last match within it:
    1. anchored statements: "Answer: C", "The answer is (C)", "the correct option is C";
    2. a wrapped letter: "(C)", "[C]", "**C**";
    3. a reply that is the letter or starts with it and a mark: "C", "C.", "C) 42" (not the
       article of "A good question").
    Letters are whole tokens: the "A" of "A good choice" or of "Also" never counts.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedChoice(None, missing)
    for pattern in _choice_patterns(letters):
        matches = list(pattern.finditer(text))
        if matches:
            groups = [g for g in matches[-1].groups() if g]
            return ParsedChoice(groups[-1], "ok")
    return ParsedChoice(None, _missing(text, "no_choice"))


# ---- normalised strings and labels ---------------------------------------------------------

_SEPARATORS = re.compile(r"(?<!\d)[\W_]+|[\W_]+(?!\d)")


def normalize_answer(text: str, synonyms: Mapping[str, str] | None = None) -> str:
    """Case-folded (NFKC), punctuation and underscores turned into single spaces (except a
    separator between two digits, so "3.5" stays "3.5"), trimmed; then mapped through
    ``synonyms`` (a normalised variant -> normalised canonical map from
    :func:`synonym_map`) when the whole answer is a known variant.

    "Card_Arrival." -> "card arrival"; "  Out-of-scope " -> "out of scope".
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    norm = " ".join(_SEPARATORS.sub(" ", folded).split())
    if synonyms:
        return synonyms.get(norm, norm)
    return norm


def synonym_map(synonyms: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """``{canonical: [variant, ...]}`` (the class setting) -> normalised ``{variant: canonical}``
    (every canonical also maps to itself).

    Raises:
        ValueError: one variant is listed under two different canonicals.
    """
    out: dict[str, str] = {}
    for canonical, variants in (synonyms or {}).items():
        canon = normalize_answer(canonical)
        for variant in [canonical, *variants]:
            key = normalize_answer(variant)
            if out.get(key, canon) != canon:
                raise ValueError(f"synonym '{variant}' maps to both '{out[key]}' and '{canon}'")
            out[key] = canon
    return out


@dataclass(frozen=True, slots=True)
class ParsedLabel:
    """``label`` (normalised canonical form) is set only when ``status`` is ``ok``.

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_label`` | ``ambiguous_label``.
    """

    label: str | None
    status: str


def find_label(
    text: str,
    labels: Iterable[str] | None,
    synonyms: Mapping[str, str] | None = None,
    *,
    finish_reason: str = "stop",
) -> ParsedLabel:
    """The class label a reply names.

    Without ``labels``: the whole normalised reply (:func:`normalize_answer`) is the label.
    With ``labels``: every label and synonym is searched as a whole-token phrase in the
    normalised reply; a phrase inside a longer matched phrase does not count ("exchange rate"
    inside "card payment wrong exchange rate"); exactly one distinct label is ``ok``, more than
    one is ``ambiguous_label``, none is ``no_label``.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedLabel(None, missing)
    syn = dict(synonyms or {})
    if labels is None:
        label = normalize_answer(text, syn)
        return ParsedLabel(label, "ok") if label else ParsedLabel(None, "empty")
    phrases: dict[str, str] = {}
    for label in labels:
        norm = normalize_answer(label)
        phrases[norm] = syn.get(norm, norm)
    for variant, canonical in syn.items():
        if canonical in phrases.values():
            phrases.setdefault(variant, canonical)
    hay = " " + normalize_answer(text) + " "
    spans: list[tuple[int, int, str]] = []
    for phrase, canonical in phrases.items():
        if not phrase:
            continue
        needle = " " + phrase + " "
        start = hay.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle), canonical))
            start = hay.find(needle, start + 1)
    kept = {
        canonical
        for s, e, canonical in spans
        if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in spans)
    }
    if not kept:
        return ParsedLabel(None, _missing(text, "no_label"))
    if len(kept) > 1:
        return ParsedLabel(None, "ambiguous_label")
    return ParsedLabel(kept.pop(), "ok")


# ---- JSON ------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class ParsedJson:
    """``value`` is meaningful only when ``status`` is ``ok`` (it may be JSON ``null``).

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_json``.
    """

    value: Any
    status: str


def _json_values(text: str) -> list[Any]:
    """Top-level JSON objects/arrays embedded in ``text``, left to right, non-overlapping."""
    found: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = _DECODER.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            except RecursionError:  # nested past the decoder's depth: skip the run of openers
                while i < len(text) and text[i] in "{[ \t\r\n":
                    i += 1
                continue
            found.append(value)
            i = end
        else:
            i += 1
    return found


def extract_json(text: str, *, finish_reason: str = "stop") -> ParsedJson:
    """The JSON value a reply gives: the whole reply if it is JSON; else the last fenced code
    block (```` ```json ```` or a plain fence) that parses; else the last JSON object or array
    embedded in the prose. Markdown-escaped underscores (``release\\_date``) are unescaped first.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedJson(None, missing)
    cleaned = text.replace("\\_", "_")
    try:
        return ParsedJson(json.loads(cleaned), "ok")
    except (json.JSONDecodeError, RecursionError):
        pass
    for _lang, body in reversed(_FENCE.findall(cleaned)):
        try:
            return ParsedJson(json.loads(body), "ok")
        except (json.JSONDecodeError, RecursionError):
            values = _json_values(body)
            if values:
                return ParsedJson(values[-1], "ok")
    values = _json_values(cleaned)
    if values:
        return ParsedJson(values[-1], "ok")
    return ParsedJson(None, _missing(text, "no_json"))


# ---- numbers -------------------------------------------------------------------------------

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
    """Equal within tolerance: ``|a - b| <= max(rel_tol * max(|a|, |b|), abs_tol)``
    (``math.isclose``)."""
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
