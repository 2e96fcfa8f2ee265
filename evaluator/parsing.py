"""Reading verdicts and answers out of model text.

Judge ratings, replies without a verdict, pairwise verdicts, multiple-choice letters, class labels,
JSON values and final numbers. Every parser returns a value *and* a parse status, so an
unreadable reply is stored as such and kept out of the disagreement rate instead of being guessed.

Shared rules:

- **Anchored**: a value counts only next to a marker that says "this is the verdict"
  (``[[8]]``, ``Rating: 8``, ``Answer: C``, ``[[A]]``), never any number or letter in the text.
- **Last match**: when a reply states its verdict more than once, the last statement wins (judges
  reason first and conclude last). This holds among marked statements, and among free-text
  ones when there is no marked statement (see "Labelled field first").
- **Whole token**: ``[[A]]`` is not ``[[AB]]``; the label ``card arrival`` is not inside
  ``card arrival delay``; ``C`` is not the ``C`` of ``Cats``.
- **No verdict**: a reply cut off by the token limit (finish reason ``length``) is
  ``truncated``; a provider-side refusal (finish reason ``refusal``) or a refusal sentence with no
  verdict is ``refused``; an empty reply is ``empty``.
- **Labelled field first**: a verdict stated in a labelled field is read from that field, whatever
  the rest of the reply says: an explanation that uses the other verdict's word ("B's answer is
  worse", "I disagree with the reference") or mentions another number ("3/10") does not change
  it. A labelled field is a member of a JSON object in the reply (``"rating": 8``,
  ``"verdict": "A"``, ``"label": "agree"``, ``"answer": "C"``) or a line that starts with the
  field's name and a colon (``Verdict: agree``, ``**Rating:** 8``, ``Final answer: C``; the value
  may be on the next line). Once a JSON object gives the verdict, nothing else inside that object
  (its explanation) is searched. Labelled fields and MT-Bench's own markers (``[[8]]``,
  ``[[A]]``, outside such an object) are the marked statements, and the last of them wins; free
  text ("I rate this 7", "7/10", "the answer is C", a label named in a sentence) is read only
  when no marked statement carries a verdict. A labelled field that carries no readable verdict
  ("Rating: N/A") is passed over.
- **JSON wherever the reply puts it**: the whole reply, a markdown code fence (```` ```json ````
  or a bare ```` ``` ````, closed or left open at the end) or an object inside the prose. One
  helper finds it for every parser (:func:`_reply_json`).
- **One verdict vocabulary**: binary and pairwise verdict words come from one table
  (:data:`_VERDICT_WORDS`): agree/disagree, pass/fail, yes/no, correct/incorrect, and the pairwise
  A/B/C of MT-Bench, LLMBar and PandaLM. Case, bold markdown (``**Pass**``), quotes and trailing
  punctuation do not matter; a single letter counts in upper case only (in prose "a" is an
  article).
- **Negation**: a negated binary verdict word is not that word. "not correct" / "isn't correct"
  reads as ``incorrect`` and "does not agree" as ``disagree`` when both words of that pair are
  labels; a negated one without such an opposite ("not incorrect") names nothing. Other labels
  are topics, named negated or not ("I can't verify my identity" is about "verify my
  identity"). Whole tokens keep "incorrect" from ever matching "correct" and "disagree" from
  matching "agree".
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Container, Iterable, Mapping, Sequence
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
    """Why a reply cannot carry a verdict at all, before any parsing (docs/field-cases.md).

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


# ---- JSON in a reply -------------------------------------------------------------------------

# A markdown code fence: ```json or a bare ```, its body on the next line or on the fence's own
# line (```{"a": 1}```); a last fence left open runs to the end of the reply.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class _Json:
    """A JSON value a reply gives, where it is (``start``..``end`` in the reply) and how it is
    given: ``whole`` (the reply is the JSON), ``fence`` (a code fence's body) or ``prose``."""

    start: int
    end: int
    value: Any
    kind: str


# Where a JSON object (``{`` then a key or ``}``) or an array may start.
_OPENINGS = {"{": re.compile(r'\{\s*["}]'), "{[": re.compile(r'\{\s*["}]|\[')}


def _json_values(text: str, opening: str = "{[") -> list[tuple[int, int, Any]]:
    """Top-level JSON values embedded in ``text`` that start with one of ``opening`` (``{[``:
    objects and arrays; ``{``: objects only), with their spans, left to right,
    non-overlapping."""
    candidates = _OPENINGS[opening]
    found: list[tuple[int, int, Any]] = []
    i = 0
    while (m := candidates.search(text, i)) is not None:
        i = m.start()
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        except RecursionError:  # nested past the decoder's depth: skip the whole run of openers
            while i < len(text) and text[i] in "{[ \t\r\n":
                i += 1
            continue
        found.append((i, end, value))
        i = end
    return found


def _masked(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with every span blanked out (line breaks kept, so offsets and lines stay put)."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = ["\n" if c == "\n" else " " for c in chars[start:end]]
    return "".join(chars)


def _reply_json(text: str, opening: str = "{[") -> list[_Json]:
    """Every JSON value ``text`` gives, left to right: the whole reply when it is JSON (and then
    nothing else); otherwise each code fence whose body is JSON or holds some (the last value in
    it), and each JSON object or array in the prose outside the fences. ``opening="{"`` looks
    for objects only inside fences and prose (what the verdict parsers read; arrays of stray
    brackets then cost nothing)."""
    try:
        return [_Json(0, len(text), json.loads(text), "whole")]
    except (ValueError, RecursionError):
        pass
    found: list[_Json] = []
    fences = list(_FENCE.finditer(text))
    for fence in fences:
        body = fence.group(2)
        try:
            found.append(_Json(fence.start(), fence.end(), json.loads(body), "fence"))
        except (ValueError, RecursionError):
            inner = _json_values(body, opening)
            if inner:
                found.append(_Json(fence.start(), fence.end(), inner[-1][2], "fence"))
    prose = _masked(text, [(f.start(), f.end()) for f in fences])
    found.extend(
        _Json(start, end, value, "prose") for start, end, value in _json_values(prose, opening)
    )
    found.sort(key=lambda j: j.start)
    return found


def _field_name(key: str) -> str:
    """A JSON key as a field name: normalised, without a leading "final" / "overall"."""
    name = normalize_answer(key)
    for prefix in ("final ", "overall "):
        name = name.removeprefix(prefix)
    return name


def _json_fields(text: str, fields: Sequence[str]) -> list[tuple[_Json, Any]]:
    """(object, value) for each JSON object in ``text`` (:func:`_reply_json`) that has one of
    ``fields`` (the first of them it has; keys match by normalised name, so ``Final_Verdict``
    is ``verdict``), left to right."""
    out: list[tuple[_Json, Any]] = []
    for found in _reply_json(text, "{"):
        if not isinstance(found.value, dict):
            continue
        members: dict[str, Any] = {}
        for key, value in found.value.items():
            members.setdefault(_field_name(str(key)), value)
        field = next((f for f in fields if f in members), None)
        if field is not None:
            out.append((found, members[field]))
    return out


# ---- labelled lines --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    """A labelled line: where it starts, where its value starts, and the value (the rest of the
    line; the next non-empty line when the label stands alone)."""

    start: int
    at: int
    value: str


def _line_pattern(fields: Sequence[str]) -> re.Pattern[str]:
    """A line that starts with one of ``fields`` as a label and a colon: markdown list, quote
    and heading marks and bold allowed around it, "Final" / "Overall" before it, a parenthesis
    after it ("Rating (1-10): 8")."""
    names = "|".join(
        re.escape(f).replace(r"\ ", r"[ \t_-]+") for f in sorted(fields, key=len, reverse=True)
    )
    return re.compile(
        r"^[ \t]*(?:[>#*+\-][ \t>#*+\-]*|\d+[.)][ \t]+)?(?:\*\*|__)?[ \t]*"
        r"(?:(?:final|overall)[ \t_-]+)?(?:" + names + r")(?:[ \t]*\([^)\n]*\))?"
        r"[ \t]*(?:\*\*|__)?[ \t]*[:=][ \t]*(?:\*\*|__)?[ \t]*",
        re.IGNORECASE | re.MULTILINE,
    )


_NEXT_LINE = re.compile(r"\s*(\S[^\n]*)")


def _labelled_lines(text: str, pattern: re.Pattern[str]) -> list[_Line]:
    """Every line of ``text`` that ``pattern`` (from :func:`_line_pattern`) labels, in order."""
    out: list[_Line] = []
    for m in pattern.finditer(text):
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        at, value = m.end(), text[m.end() : end]
        if not value.strip(" \t\r*_"):  # "Verdict:" alone on its line: the value is below
            below = _NEXT_LINE.match(text, end)
            if below is not None:
                at, value = below.start(1), below.group(1)
        out.append(_Line(m.start(), at, value))
    return out


# ---- the verdict vocabulary ------------------------------------------------------------------

# Every verdict word the parsers understand, by vocabulary and meaning. Binary vocabularies mean
# "positive" or "negative"; the pairwise one means "A", "B" or "C" (C a tie). Keys are
# case-folded, except single letters, which count in upper case only. Sources:
# - pairwise: MT-Bench's "[[A]]" / "[[B]]" / "[[C]]", whose pair-v2 prompt calls the answers
#   "Assistant A" / "Assistant B" (FastChat llm_judge, evaluator/graders/judge_prompts.jsonl);
#   LLMBar's "Output (a)" / "Output (b)" (princeton-nlp/LLMBar, its recorded completions are
#   behind datasets/llmbar.jsonl); PandaLM's "1" / "2" / "Tie" (WeOpenML/PandaLM, behind
#   datasets/pandalm.jsonl);
# - binary: agree/disagree (tierwise's own grade verdicts); pass/fail, yes/no and
#   correct/incorrect (the common pass/fail rubric graders).
_VERDICT_WORDS: dict[str, tuple[str, str]] = {
    "agree": ("agree/disagree", "positive"),
    "disagree": ("agree/disagree", "negative"),
    "pass": ("pass/fail", "positive"),
    "fail": ("pass/fail", "negative"),
    "yes": ("yes/no", "positive"),
    "no": ("yes/no", "negative"),
    "correct": ("correct/incorrect", "positive"),
    "incorrect": ("correct/incorrect", "negative"),
    "A": ("pairwise", "A"),
    "B": ("pairwise", "B"),
    "C": ("pairwise", "C"),
    "assistant a": ("pairwise", "A"),
    "assistant b": ("pairwise", "B"),
    "output (a)": ("pairwise", "A"),
    "output (b)": ("pairwise", "B"),
    "1": ("pairwise", "A"),
    "2": ("pairwise", "B"),
    "tie": ("pairwise", "C"),
}
# The pairwise words that count as a whole reply (or its first line) on their own: LLMBar and
# PandaLM answer this way. A bare letter does not ("A" may start a sentence).
_PAIRWISE_ALONE = frozenset({"output (a)", "output (b)", "1", "2", "tie"})
# MT-Bench's pairwise format (FastChat llm_judge pair-v2: "[[A]]", "[[B]]", "[[C]]").
_PAIR = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_WRAPPING = " \t\r\n*_`'\"\u201c\u201d\u2018\u2019"
_TRAILING = ".,;:!?"


def _bare(value: str) -> str:
    """``value`` without surrounding emphasis, quotes, code marks and trailing punctuation:
    ``"**Pass**."`` -> ``Pass``."""
    previous = None
    while previous != value:
        previous = value
        value = value.strip(_WRAPPING).rstrip(_TRAILING)
    return value


def _pairwise_word(value: str, only: Container[str] | None = None) -> str | None:
    """``A`` | ``B`` | ``C`` when the whole of ``value`` is one pairwise verdict word
    (``[[B]]``, ``B``, ``Tie``, ``Output (a)``, ``**Assistant A**.``), else None; with ``only``,
    just the words in it."""
    bare = _bare(value)
    bracketed = _PAIR.fullmatch(bare)
    if bracketed is not None:
        return None if only is not None else bracketed.group(1)
    word = bare if len(bare) == 1 else " ".join(bare.casefold().split())
    word = re.sub(r"\s*\(\s*([a-z])\s*\)", r" (\1)", word)
    entry = _VERDICT_WORDS.get(word)
    if entry is None or entry[0] != "pairwise" or (only is not None and word not in only):
        return None
    return entry[1]


def _is_binary_word(word: str) -> bool:
    """True for a word of a binary vocabulary of :data:`_VERDICT_WORDS` (``pass``, ``no``)."""
    entry = _VERDICT_WORDS.get(word)
    return entry is not None and entry[0] != "pairwise"


def _negative_of(word: str) -> str | None:
    """The negative word of ``word``'s binary vocabulary when ``word`` is a positive one
    (``correct`` -> ``incorrect``), else None."""
    entry = _VERDICT_WORDS.get(word)
    if entry is None or entry[1] != "positive":
        return None
    return next(
        w
        for w, (vocabulary, meaning) in _VERDICT_WORDS.items()
        if vocabulary == entry[0] and meaning == "negative"
    )


# Words that negate what follows, as normalize_answer leaves them ("doesn't" becomes "doesn t").
_NEGATORS = frozenset(
    "not never cannot neither nor dont doesnt didnt isnt wasnt "  # noqa: SIM905 - word list
    "arent werent cant couldnt wont wouldnt shouldnt hasnt havent hadnt aint".split()
)
# Words allowed between a negator and the word it negates ("not at all correct", "not a pass").
_BETWEEN = frozenset(
    "a an the be been being really fully entirely completely "  # noqa: SIM905 - word list
    "quite totally exactly necessarily always very so at all actually".split()
)


def _negated(before: str) -> bool:
    """True when the normalised text ``before`` a word ends in a negation of it."""
    tokens = before.rsplit(None, 4)
    i = len(tokens) - 1
    while i >= 0 and tokens[i] in _BETWEEN and len(tokens) - 1 - i < 2:
        i -= 1
    if i < 0:
        return False
    return tokens[i] in _NEGATORS or (tokens[i] == "t" and i > 0 and tokens[i - 1].endswith("n"))


# ---- reading a 1-10 rating -----------------------------------------------------------------

_RATING_FIELDS = ("rating", "score")
_RATING_LINE = _line_pattern(_RATING_FIELDS)
_LEADING_NUMBER = re.compile(r"\A[ \t*_]*(?:\[\[[ \t]*)?" + _NUM + r"(?![\d.]*\d)")


@dataclass(frozen=True, slots=True)
class ParsedRating:
    """``score`` is set only when ``status`` is ``ok``.

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_rating`` | ``out_of_range``.
    """

    score: float | None
    status: str


def _json_rating(value: Any) -> float | None:
    """A JSON member's value as a rating: a number (``inf`` past float range); None for
    anything else (a string ``"8"``, a boolean, null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf


def _rating_status(value: float, low: float, high: float) -> ParsedRating:
    if not math.isfinite(value) or not low <= value <= high:
        return ParsedRating(None, "out_of_range")
    return ParsedRating(value, "ok")


def parse_rating(
    text: str, *, low: float = 1, high: float = 10, finish_reason: str = "stop"
) -> ParsedRating:
    """The judge's rating on a ``low``..``high`` scale (docs/field-cases.md).

    Marked statements decide, the last of them winning: ``[[N]]`` (MT-Bench's format) outside
    a JSON object that gives the rating; the numeric ``"rating"`` / ``"score"`` member of a JSON
    object in the reply (whole, fenced or in prose; see :func:`parse_rating_json`); a labelled
    line ``Rating: N`` / ``**Score:** N/10`` / ``Final rating: N``. Only without any, free
    text: the last of "rating is N", "score of N", "I rate this N", "N/10", "N out of 10". So
    ``{"explanation": "... 3/10 ...", "rating": 8}`` and "Rating: 8\\nA 3/10 answer would ..."
    are 8. Out of range is ``out_of_range`` (never clamped: "[[90]]" is not 10); a bare "0.8"
    has no anchor and is ``no_rating``. See :func:`no_verdict_status` for
    ``truncated``/``refused``/``empty``. Never raises.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedRating(None, missing)
    given = [
        (found, rating)
        for found, value in _json_fields(text, _RATING_FIELDS)
        if (rating := _json_rating(value)) is not None
    ]
    free = _masked(text, [(found.start, found.end) for found, _ in given])
    marked = [(found.start, rating) for found, rating in given]
    marked += [(m.start(), float(m.group(1))) for m in _BRACKETED.finditer(free)]
    for line in _labelled_lines(free, _RATING_LINE):
        number = _LEADING_NUMBER.match(line.value)
        if number is not None:
            marked.append((line.start, float(number.group(1))))
    if marked:
        return _rating_status(max(marked, key=lambda x: x[0])[1], low, high)
    found: list[tuple[int, str]] = []
    for pattern in _FALLBACKS:
        found.extend((m.start(1), m.group(1)) for m in pattern.finditer(free))
    if not found:
        return ParsedRating(None, _missing(text, "no_rating"))
    return _rating_status(float(max(found)[1]), low, high)


def parse_rating_json(
    text: str, *, low: float = 1, high: float = 10, finish_reason: str = "stop"
) -> ParsedRating | None:
    """The rating of a structured judge reply ``{"explanation": str, "rating": int}``.

    The object may be the whole reply, in a code fence (```` ```json ```` or bare) or in the
    prose; the last object with a numeric ``rating`` (or ``score``; keys by normalised name)
    counts, and nothing in its explanation does. None when there is no such object (missing,
    malformed, a string, a boolean): the caller then falls back to :func:`parse_rating` on the
    same text. The range check is :func:`parse_rating`'s: out of ``low``..``high`` (or not
    finite) is ``out_of_range``, never clamped. ``truncated``/``refused``/``empty`` come first,
    as there (:func:`no_verdict_status`). Never raises.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedRating(None, missing)
    ratings = [
        rating
        for _, value in _json_fields(text, _RATING_FIELDS)
        if (rating := _json_rating(value)) is not None
    ]
    if not ratings:
        return None
    return _rating_status(ratings[-1], low, high)


# ---- pairwise verdicts ---------------------------------------------------------------------

_PAIRWISE_FIELDS = ("verdict", "winner", "better", "preference", "choice")
_PAIRWISE_LINE = _line_pattern(_PAIRWISE_FIELDS)


@dataclass(frozen=True, slots=True)
class ParsedPairwise:
    """``winner`` is ``A`` | ``B`` | ``C`` (tie), set only when ``status`` is ``ok``.

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_verdict``.
    """

    winner: str | None
    status: str


def _json_pairwise(text: str) -> list[tuple[_Json, str]]:
    """(object, winner) for each JSON object in ``text`` whose verdict member is a pairwise
    verdict word (:data:`_VERDICT_WORDS`)."""
    return [
        (found, winner)
        for found, value in _json_fields(text, _PAIRWISE_FIELDS)
        if isinstance(value, str) and (winner := _pairwise_word(value)) is not None
    ]


def parse_pairwise(text: str, *, finish_reason: str = "stop") -> ParsedPairwise:
    """A pairwise verdict ``A`` | ``B`` | ``C`` (tie) from a judge's text.

    Marked statements decide, the last of them winning: MT-Bench's ``[[A]]`` / ``[[B]]`` /
    ``[[C]]`` (format of FastChat's ``pair-v2`` judge prompt,
    ``llm_judge/data/judge_prompts.jsonl``) outside a JSON object that gives the verdict; the
    ``"verdict"`` (or ``"winner"``, ...) member of a JSON object in the reply; a labelled line
    ``Verdict: B`` / ``**Final verdict:** Tie`` / ``Winner: Output (a)``. A member's or line's
    whole value must be a pairwise word of :data:`_VERDICT_WORDS`. Only without any, a first
    line that is just LLMBar's ``Output (a)`` / ``Output (b)`` or PandaLM's ``1`` / ``2`` /
    ``Tie``. Only whole tokens count: ``[[AB]]``, a bare "A" in a sentence or "A is better." is
    ``no_verdict``. Never raises.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedPairwise(None, missing)
    given = _json_pairwise(text)
    free = _masked(text, [(found.start, found.end) for found, _ in given])
    marked = [(found.start, winner) for found, winner in given]
    marked += [(m.start(), m.group(1)) for m in _PAIR.finditer(free)]
    for line in _labelled_lines(free, _PAIRWISE_LINE):
        winner = _pairwise_word(line.value)
        if winner is not None:
            marked.append((line.start, winner))
    if marked:
        return ParsedPairwise(max(marked, key=lambda x: x[0])[1], "ok")
    first = next((line for line in free.splitlines() if line.strip()), "")
    alone = _pairwise_word(first, _PAIRWISE_ALONE)
    if alone is not None:
        return ParsedPairwise(alone, "ok")
    return ParsedPairwise(None, _missing(text, "no_verdict"))


def parse_pairwise_json(text: str, *, finish_reason: str = "stop") -> ParsedPairwise | None:
    """The verdict of a structured pairwise reply ``{"explanation": str, "verdict": "A"|"B"|"C"}``.

    The object may be the whole reply, in a code fence or in the prose; the last object whose
    ``verdict`` (or ``winner``, ...) is a pairwise word of :data:`_VERDICT_WORDS` counts (``A``,
    ``B``, ``C``, ``Tie``, ``Output (a)``, ``Assistant B``, PandaLM's ``1``/``2``; a letter in
    upper case only), and nothing in its explanation does. None when there is no such object
    (the caller then falls back to :func:`parse_pairwise`). ``truncated``/``refused``/``empty``
    come first (:func:`no_verdict_status`). Never raises.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedPairwise(None, missing)
    given = _json_pairwise(text)
    if not given:
        return None
    return ParsedPairwise(given[-1][1], "ok")


# ---- multiple choice -----------------------------------------------------------------------

_CHOICE_FIELDS = (
    "answer",
    "correct answer",
    "choice",
    "correct choice",
    "option",
    "correct option",
)
_CHOICE_LINE = _line_pattern(_CHOICE_FIELDS)


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


def _choice_in(text: str, patterns: Sequence[re.Pattern[str]]) -> str | None:
    """The letter of the first of ``patterns`` that matches ``text`` (its last match)."""
    for pattern in patterns:
        matches = list(pattern.finditer(text))
        if matches:
            groups = [g for g in matches[-1].groups() if g]
            return groups[-1]
    return None


def parse_choice(text: str, *, letters: str = "ABCD", finish_reason: str = "stop") -> ParsedChoice:
    """The multiple-choice letter a reply picks, from ``letters`` (upper case only).

    A labelled field decides first (last one that names a letter): the ``"answer"`` (or
    ``"choice"``, ``"option"``) member of a JSON object in the reply, or a line ``Answer: C`` /
    ``**Final answer:** (C)``; its value is read by the tiers below. So "Answer: B" then
    "Option A is wrong because ..." is B. Otherwise the first tier that matches the text
    decides, last match within it:
    1. anchored statements: "Answer: C", "The answer is (C)", "the correct option is C";
    2. a wrapped letter: "(C)", "[C]", "**C**";
    3. a reply that is the letter or starts with it and a mark: "C", "C.", "C) 42" (not the
       article of "A good question").
    Letters are whole tokens: the "A" of "A good choice" or of "Also" never counts. Never
    raises.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedChoice(None, missing)
    patterns = _choice_patterns(letters)
    given = [
        (found, letter)
        for found, value in _json_fields(text, _CHOICE_FIELDS)
        if isinstance(value, str) and (letter := _choice_in(value, patterns)) is not None
    ]
    free = _masked(text, [(found.start, found.end) for found, _ in given])
    labelled = [(found.start, letter) for found, letter in given]
    for line in _labelled_lines(free, _CHOICE_LINE):
        letter = _choice_in(line.value, patterns)
        if letter is not None:
            labelled.append((line.start, letter))
    if labelled:
        return ParsedChoice(max(labelled, key=lambda x: x[0])[1], "ok")
    letter = _choice_in(text, patterns)
    if letter is not None:
        return ParsedChoice(letter, "ok")
    return ParsedChoice(None, _missing(text, "no_choice"))


# ---- normalised strings and labels ---------------------------------------------------------

_SEPARATORS = re.compile(r"(?<!\d)[\W_]+|[\W_]+(?!\d)")
_LABEL_FIELDS = (
    "label",
    "verdict",
    "answer",
    "intent",
    "category",
    "class",
    "classification",
    "prediction",
)
_LABEL_LINE = _line_pattern(_LABEL_FIELDS)


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


def _labels_named(text: str, phrases: Mapping[str, str], negative: Mapping[str, str]) -> set[str]:
    """The canonical labels ``text`` names: ``phrases`` (normalised phrase -> canonical) found
    as whole-token phrases, not inside a longer found phrase. A negated binary verdict word
    (:data:`_VERDICT_WORDS`) names its ``negative`` (phrase -> canonical of its opposite) when
    it has one, else nothing; any other phrase counts negated or not (the intent "verify my
    identity" is what "I can't verify my identity" is about)."""
    hay = " " + normalize_answer(text) + " "
    spans: list[tuple[int, int, str, str]] = []
    for phrase, canonical in phrases.items():
        if not phrase:
            continue
        needle = " " + phrase + " "
        start = hay.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle), phrase, canonical))
            start = hay.find(needle, start + 1)
    named: set[str] = set()
    for s, e, phrase, canonical in spans:
        if any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _, _ in spans):
            continue
        if not _is_binary_word(phrase) or not _negated(hay[:s]):
            named.add(canonical)
        elif phrase in negative:
            named.add(negative[phrase])
    return named


def _one_label(named: set[str], text: str) -> ParsedLabel:
    if not named:
        return ParsedLabel(None, _missing(text, "no_label"))
    if len(named) > 1:
        return ParsedLabel(None, "ambiguous_label")
    return ParsedLabel(named.pop(), "ok")


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
    one is ``ambiguous_label``, none is ``no_label``. A labelled field is searched first, the
    last that names a label deciding: the ``"label"`` (or ``"verdict"``, ``"answer"``,
    ``"intent"``, ...) string member of a JSON object in the reply (whole, fenced or in prose),
    or a line ``Verdict: agree`` / ``Intent: card_arrival``; so "Explanation: I disagree with
    ...\\nVerdict: agree" is ``agree``. A negated binary verdict word of :data:`_VERDICT_WORDS`
    is not that word: with both words of its pair among the labels a negated positive word is the
    negative one ("not correct" is ``incorrect``, "doesn't agree" is ``disagree``), otherwise it
    names nothing. Never raises.
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
    negative = {
        phrase: phrases[opposite]
        for phrase in phrases
        if (opposite := _negative_of(phrase)) is not None and opposite in phrases
    }
    given = [
        (found, value)
        for found, value in _json_fields(text, _LABEL_FIELDS)
        if isinstance(value, str)
    ]
    free = _masked(text, [(found.start, found.end) for found, _ in given])
    fields = [(found.start, value) for found, value in given]
    fields += [(line.start, line.value) for line in _labelled_lines(free, _LABEL_LINE)]
    for _, value in sorted(fields, key=lambda f: f[0], reverse=True):
        named = _labels_named(value, phrases, negative)
        if named:
            return _one_label(named, text)
    return _one_label(_labels_named(text, phrases, negative), text)


# ---- JSON ------------------------------------------------------------------------------------

_JSON_LINE = _line_pattern(("answer", "output", "json", "result"))
_JSON_LEAD = " \t\r\n`*"


@dataclass(frozen=True, slots=True)
class ParsedJson:
    """``value`` is meaningful only when ``status`` is ``ok`` (it may be JSON ``null``).

    status: ``ok`` | ``empty`` | ``truncated`` | ``refused`` | ``no_json``.
    """

    value: Any
    status: str


def extract_json(text: str, *, finish_reason: str = "stop") -> ParsedJson:
    """The JSON value (any JSON type) a reply gives: the whole reply if it is JSON; else the
    last fenced code block (```` ```json ```` or a plain fence) that holds JSON; else the last
    JSON object or array right after a labelled line (``Answer:``, ``Output:``, ``JSON:``,
    ``Final answer:``), so a draft quoted after the answer does not replace it; else the last
    JSON object or array embedded in the prose. Markdown-escaped underscores
    (``release\\_date``) are unescaped first. Never raises.
    """
    missing = no_verdict_status(text, finish_reason)
    if missing is not None:
        return ParsedJson(None, missing)
    cleaned = text.replace("\\_", "_")
    found = _reply_json(cleaned)
    for kind in ("whole", "fence"):
        given = [j for j in found if j.kind == kind]
        if given:
            return ParsedJson(given[-1].value, "ok")
    starts = [line.at for line in _labelled_lines(cleaned, _JSON_LINE)]
    labelled = [
        j
        for j in found
        if any(at <= j.start and not cleaned[at : j.start].strip(_JSON_LEAD) for at in starts)
    ]
    if labelled:
        return ParsedJson(labelled[-1].value, "ok")
    if found:
        return ParsedJson(found[-1].value, "ok")
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
