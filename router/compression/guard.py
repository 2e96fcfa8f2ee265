"""The extraction guard: which units hold field-like tokens, and which values a question names.

A unit holds a field when it contains a number, a date, an amount, an identifier (a UUID, a
code mixing letters and digits such as ``INV-2024-0042``, a long hex string), an e-mail address,
a ``key: value`` (or ``key = value``) pair, or a table row (two or more ``|``, or a tab).

A question names a value when it quotes it (``"…"``, ``'…'`` or a backquoted span), or
contains an identifier or an e-mail address: what an extraction must find verbatim. A request
whose compressed text would drop a named value that the original holds goes uncompressed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from router.compression.text import Segmented

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
CODE = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)+\b")
HEX = re.compile(r"\b[0-9a-fA-F]{12,}\b")
NUMBER = re.compile(r"\d")
DATE = re.compile(
    r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
    r"Nov|Dec)[a-z]*\.? \d{1,2}(?:, \d{4})?)\b"
)
AMOUNT = re.compile(r"[$€£¥]\s?\d|\d\s?(?:USD|EUR|GBP|%)")
KEY_VALUE = re.compile(r"^\s*[\"']?[\w .-]{1,60}[\"']?\s*[:=]\s*\S", re.M)
TABLE_ROW = re.compile(r"\|.*\|.*|\t")
QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|'([^'\n]{2,200})'|`([^`\n]{1,200})`")

FIELD_PATTERNS: tuple[re.Pattern[str], ...] = (
    NUMBER,
    DATE,
    AMOUNT,
    UUID,
    CODE,
    HEX,
    EMAIL,
    KEY_VALUE,
    TABLE_ROW,
)


def holds_field(text: str) -> bool:
    """True when ``text`` holds a field-like token (module doc)."""
    return any(p.search(text) for p in FIELD_PATTERNS)


def field_units(seg: Segmented) -> set[int]:
    """Indices of the units that hold a field."""
    return {i for i in range(len(seg.units)) if holds_field(seg.unit_text(i))}


def named_values(question: str) -> list[str]:
    """The values ``question`` names (quoted spans, identifiers, e-mail addresses), in the
    order they appear, each once."""
    found: list[tuple[int, str]] = []
    for m in QUOTED.finditer(question):
        found.append((m.start(), next(g for g in m.groups() if g is not None)))
    for pattern in (UUID, EMAIL, CODE, HEX):
        found.extend((m.start(), m.group(0)) for m in pattern.finditer(question))
    found.sort()
    seen: set[str] = set()
    out: list[str] = []
    for _, raw in found:
        value = raw.strip()
        if value and value not in seen:
            seen.add(value)
            out.append(value)
    return out


def dropped_values(named: Iterable[str], original: str, compressed: str) -> list[str]:
    """The named values the original holds and the compressed text no longer does."""
    return [v for v in named if v in original and v not in compressed]
