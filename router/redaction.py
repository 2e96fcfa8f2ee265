"""What of a sampled call's text is stored: nothing for a class that keeps no text, else the text
after the class's redaction (``redact``, ``redact_patterns`` in the policy).

Redaction runs before the text reaches the database (the ``sample`` row, a grade's
``raw_output``), so the grader, which reads the stored sample after the outcome call has
returned, sees the redacted text too, and so does the reference provider it calls: a pattern the
operator does not want kept is not sent to a third party either. Each match is replaced by a
fixed marker: ``[email]``, ``[phone]``, ``[card]``, ``[redacted]`` (custom patterns).

Patterns:

- ``email``: ``local@domain.tld`` (RFC 5322's dot-atom form; quoted local parts are left alone).
- ``phone``: a number written with a leading ``+`` country code (8 to 15 digits in all, the
  E.164 maximum; spaces, dots, dashes and one bracketed group allowed), or the North American
  ``(415) 555-2671`` / ``415-555-2671`` / ``415.555.2671`` forms. Bare digit runs and dates
  (``2024-05-01``) are not phone numbers.
- ``card``: 13 to 19 digits, optionally grouped by single spaces or dashes, that pass the Luhn
  check (ISO/IEC 7812-1 Annex B), so an order id or other long number that fails it is kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

Builtin = Literal["email", "phone", "card"]
BUILTINS: tuple[Builtin, ...] = ("email", "phone", "card")
CUSTOM_MARK = "[redacted]"

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}"  # +44 20 7946 0958, +1 (415) 555-2671
    r"|\(\d{3}\)[ ]?\d{3}[ .-]\d{4}"  # (415) 555-2671
    r"|\d{3}([.-])\d{3}\1\d{4}"  # 415-555-2671, 415.555.2671
    r")(?![\w-])"
)
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")


def luhn_ok(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1 Annex B) of a string of digits: from the right, every
    second digit doubled (minus 9 above 9); valid when the sum is a multiple of 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if luhn_ok(digits) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("+") and not 8 <= sum(c.isdigit() for c in text) <= 15:
        return text
    return "[phone]"


class Redactor:
    """The redaction of one class: its built-in patterns (applied card, e-mail, phone, in that
    order, so a card number is not half-read as a phone number) then its custom regular
    expressions (Python ``re`` syntax, in the policy's order).

    Raises:
        ValueError: a custom pattern is not a regular expression (naming its index), or a
            built-in name is unknown.
    """

    def __init__(self, builtins: Sequence[str] = (), patterns: Sequence[str] = ()) -> None:
        steps: list[Callable[[str], str]] = []
        unknown = sorted(set(builtins) - set(BUILTINS))
        if unknown:
            raise ValueError(f"unknown redaction pattern(s) {unknown}; known: {list(BUILTINS)}")
        if "card" in builtins:
            steps.append(lambda s: _CARD.sub(_card, s))
        if "email" in builtins:
            steps.append(lambda s: _EMAIL.sub("[email]", s))
        if "phone" in builtins:
            steps.append(lambda s: _PHONE.sub(_phone, s))
        for i, pattern in enumerate(patterns):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"[{i}]: not a regular expression: {exc}") from exc
            if compiled.match(""):
                raise ValueError(f"[{i}]: the pattern matches the empty string")
            steps.append(functools.partial(compiled.sub, CUSTOM_MARK))
        self._steps = tuple(steps)

    @property
    def active(self) -> bool:
        """True when at least one pattern is configured."""
        return bool(self._steps)

    def text(self, value: str) -> str:
        """``value`` with every configured pattern replaced by its marker."""
        for step in self._steps:
            value = step(value)
        return value

    def value(self, value: Any) -> Any:
        """A JSON value with every string in it redacted (dict keys are kept)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


def stored_text(
    *,
    retention_days: int,
    redactor: Redactor,
    input_messages: list[dict[str, Any]],
    output_text: str,
) -> tuple[list[dict[str, Any]], str] | None:
    """The ``(input_messages, output_text)`` to store for a sampled call: None when the class
    keeps no text (``retention_days`` 0: nothing is stored, so nothing is queued for grading),
    else both after ``redactor`` (every string inside the messages: content, content parts,
    tool-call arguments)."""
    if retention_days == 0:
        return None
    if not redactor.active:
        return input_messages, output_text
    return [redactor.value(m) for m in input_messages], redactor.text(output_text)


@functools.lru_cache(maxsize=256)
def redactor(builtins: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> Redactor:
    """The :class:`Redactor` of these patterns, compiled once (cached by value)."""
    return Redactor(builtins, patterns)
