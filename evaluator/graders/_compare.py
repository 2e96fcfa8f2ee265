"""Pure comparisons of a graded answer with a reference answer (no model calls).

Each comparer takes ``(reference_text, candidate_text, settings)`` and returns a
:class:`Comparison`. Convention: when the *reference* text cannot be read the grade is
``invalid`` (``reference_<status>``; ``refused`` when it is a refusal) because there is nothing to
compare with; when the *candidate* cannot be read it is a ``disagree`` (``candidate_<status>``):
the cheap model failed to give what the reference gave.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evaluator.parsing import (
    extract_json,
    final_number,
    find_label,
    normalize_answer,
    numbers_match,
    parse_choice,
    synonym_map,
)
from router.policy import ClassSettings


@dataclass(frozen=True, slots=True)
class Comparison:
    """``verdict`` ``agree`` | ``disagree`` | ``invalid`` | ``refused``, its status, a score."""

    verdict: str
    status: str
    score: float | None = None


Comparer = Callable[[str, str, ClassSettings], Comparison]


def _reference_failed(status: str) -> Comparison:
    if status == "refused":
        return Comparison("refused", "reference_refused")
    return Comparison("invalid", f"reference_{status}")


def _synonyms(settings: ClassSettings) -> dict[str, str]:
    return synonym_map(settings.synonyms)


def compare_exact(reference: str, candidate: str, settings: ClassSettings) -> Comparison:
    """Equal after :func:`evaluator.parsing.normalize_answer` (case, whitespace, punctuation)
    and the class's ``synonyms``."""
    syn = _synonyms(settings)
    ref = normalize_answer(reference, syn)
    if not ref:
        return _reference_failed("empty")
    got = normalize_answer(candidate, syn)
    if not got:
        return Comparison("disagree", "candidate_empty")
    return Comparison("agree" if got == ref else "disagree", "ok")


def compare_label(reference: str, candidate: str, settings: ClassSettings) -> Comparison:
    """Same class label (:func:`evaluator.parsing.find_label` over the class's ``labels`` and
    ``synonyms``: whole-token phrases, a labelled field such as ``Verdict: pass`` or a JSON
    ``"label"`` first, a negated verdict word not read as itself; without ``labels`` this is
    :func:`compare_exact`)."""
    syn = _synonyms(settings)
    ref = find_label(reference, settings.labels, syn)
    if ref.label is None:
        return _reference_failed(ref.status)
    got = find_label(candidate, settings.labels, syn)
    if got.label is None:
        return Comparison("disagree", f"candidate_{got.status}")
    return Comparison("agree" if got.label == ref.label else "disagree", "ok")


def compare_numeric(reference: str, candidate: str, settings: ClassSettings) -> Comparison:
    """Same final number (:func:`evaluator.parsing.final_number`: GSM8K ``#### N``, else the last
    number) within ``numeric_tolerance`` (relative) or ``numeric_abs_tolerance``. ``score`` is
    the candidate's number."""
    ref = final_number(reference)
    if ref is None:
        return _reference_failed("no_number")
    got = final_number(candidate)
    if got is None:
        return Comparison("disagree", "candidate_no_number")
    same = numbers_match(
        got, ref, rel_tol=settings.numeric_tolerance, abs_tol=settings.numeric_abs_tolerance
    )
    return Comparison("agree" if same else "disagree", "ok", score=got)


def compare_choice(reference: str, candidate: str, settings: ClassSettings) -> Comparison:
    """Same multiple-choice letter (:func:`evaluator.parsing.parse_choice` over
    ``choice_letters``)."""
    ref = parse_choice(reference, letters=settings.choice_letters)
    if ref.letter is None:
        return _reference_failed(ref.status)
    got = parse_choice(candidate, letters=settings.choice_letters)
    if got.letter is None:
        return Comparison("disagree", f"candidate_{got.status}")
    return Comparison("agree" if got.letter == ref.letter else "disagree", "ok")


# ---- JSON fields -----------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def _key(obj: Mapping[str, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    norm = normalize_answer(key)
    hits = [v for k, v in obj.items() if normalize_answer(k) == norm]
    return hits[0] if len(hits) == 1 else MISSING


def select_path(value: Any, path: str) -> list[Any]:
    """The values at a dotted ``path`` (``a.b``, ``items.0.name``; ``*`` = every list element;
    ``$`` or empty = the whole value). Keys match exactly, else by normalised name
    ("main character" finds ``main_character``); a missing step yields :data:`MISSING`."""
    nodes = [value]
    for part in [p for p in path.split(".") if p not in ("", "$")]:
        nxt: list[Any] = []
        for node in nodes:
            if part == "*":
                nxt.extend(node if isinstance(node, list) else [MISSING])
            elif isinstance(node, dict):
                nxt.append(_key(node, part))
            elif isinstance(node, list) and part.lstrip("-").isdigit():
                i = int(part)
                nxt.append(node[i] if -len(node) <= i < len(node) else MISSING)
            else:
                nxt.append(MISSING)
        nodes = nxt
    return nodes


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip().replace(",", "").lstrip("$"))
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class _FieldEq:
    """Equality of JSON values under one field mode."""

    def __init__(self, settings: ClassSettings, syn: Mapping[str, str]) -> None:
        self.rel = settings.numeric_tolerance
        self.abs = settings.numeric_abs_tolerance
        self.syn = syn

    def __call__(self, a: Any, b: Any, mode: str) -> bool:
        if a is MISSING or b is MISSING:
            return a is b
        if mode == "raw":
            return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        if mode == "exact":
            return normalize_answer(_render(a), self.syn) == normalize_answer(_render(b), self.syn)
        if mode == "numeric":
            x, y = _as_number(a), _as_number(b)
            return (
                x is not None
                and y is not None
                and numbers_match(x, y, rel_tol=self.rel, abs_tol=self.abs)
            )
        if mode == "unordered" and isinstance(a, list) and isinstance(b, list):
            return self._same_multiset(a, b)
        return self._auto(a, b)

    def _same_multiset(self, a: list[Any], b: list[Any]) -> bool:
        if len(a) != len(b):
            return False
        left = list(b)
        for x in a:
            hit = next((i for i, y in enumerate(left) if self._auto(x, y)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True

    def _auto(self, a: Any, b: Any) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            keys = {normalize_answer(k) for k in a} | {normalize_answer(k) for k in b}
            return all(self._auto(_key(a, k), _key(b, k)) for k in keys)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(self._auto(x, y) for x, y in zip(a, b, strict=True))
        if a is MISSING or b is MISSING:
            return a is b
        if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
            return a is b  # true, false and null are singletons; True is never 1 here
        x, y = _as_number(a), _as_number(b)
        if x is not None and y is not None:
            return numbers_match(x, y, rel_tol=self.rel, abs_tol=self.abs)
        if isinstance(a, str) and isinstance(b, str):
            return normalize_answer(a, self.syn) == normalize_answer(b, self.syn)
        return False


def compare_json_fields(reference: str, candidate: str, settings: ClassSettings) -> Comparison:
    """Selected fields of the two JSON outputs (:func:`evaluator.parsing.extract_json`: the
    whole reply, a code fence, JSON after an ``Answer:`` label, or JSON inside prose), each
    compared under its mode:

    - ``auto``: numbers (and numeric strings) within the numeric tolerances, strings by
      :func:`~evaluator.parsing.normalize_answer` and ``synonyms``, objects by normalised key,
      lists element by element, ``true``/``false``/``null`` exactly;
    - ``exact``: normalised text of the value; ``numeric``: numbers only; ``raw``: identical JSON;
      ``unordered``: lists as multisets (``auto`` elements).

    Fields are ``json_fields`` (path -> mode, see :func:`select_path`); when unset, every
    top-level key of the reference object (``auto``), or the whole value when it is not an
    object. Agree when every field is equal; ``score`` is the fraction of equal fields.
    """
    ref = extract_json(reference)
    if ref.status != "ok":
        return _reference_failed(ref.status)
    got = extract_json(candidate)
    if got.status != "ok":
        return Comparison("disagree", f"candidate_{got.status}")
    fields: Mapping[str, str]
    if settings.json_fields:
        fields = settings.json_fields
    elif isinstance(ref.value, dict) and ref.value:
        # A dot inside a key is not a path step; its normalised form still finds the key.
        fields = {k.replace(".", " "): "auto" for k in ref.value}
    else:
        fields = {"$": "auto"}
    eq = _FieldEq(settings, _synonyms(settings))
    equal = 0
    for path, mode in fields.items():
        a, b = select_path(ref.value, path), select_path(got.value, path)
        if len(a) == len(b) and all(eq(x, y, mode) for x, y in zip(a, b, strict=True)):
            equal += 1
    score = equal / len(fields)
    return Comparison("agree" if equal == len(fields) else "disagree", "ok", score=score)


COMPARERS: dict[str, Comparer] = {
    "exact": compare_exact,
    "label": compare_label,
    "numeric": compare_numeric,
    "choice": compare_choice,
    "json_fields": compare_json_fields,
}
"""Comparers by name: the ``compare`` setting of ``reference_answer`` and the graders of the
same names."""
