"""A context cut into units (sentences, lines, headings, code blocks) that compressors keep or
drop, and put back together.

A unit is a span of the original text, so keeping every unit gives the text back byte for
byte. Paragraphs are separated by blank lines. A fenced code block (```` ``` ```` … ```` ``` ````)
is one unit, always kept. A paragraph of several lines that look like a list, a table or
``key: value`` pairs (most lines short or structured) is cut into lines; any other paragraph
into sentences (after ``.``, ``!`` or ``?`` followed by white space and a capital, a digit or a
quote). A Markdown heading (``# …``) is a unit of its own, flagged ``heading``.

Tokens are the offline estimate of :mod:`router.tokens` (about 4 characters a token).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

from router.tokens import estimate_text_tokens

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_STRUCTURED_LINE = re.compile(
    r"^\s*([-*+•]\s|\d+[.)]\s|\|.*\||[\"']?[\w .-]{1,60}[\"']?\s*[:=]\s*\S)"
)
_WORD = re.compile(r"\w+", re.UNICODE)

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
"""English function words left out of query terms (a short list: the question's content words
are what match)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit: ``text[start:end]`` of the original, its paragraph index, its estimated tokens,
    and whether it is code (never dropped) or a heading."""

    start: int
    end: int
    paragraph: int
    tokens: int
    code: bool = False
    heading: bool = False


@dataclass(frozen=True, slots=True)
class Segmented:
    """A text and its units, in order."""

    text: str
    units: tuple[Unit, ...]

    def unit_text(self, i: int) -> str:
        u = self.units[i]
        return self.text[u.start : u.end]

    @property
    def tokens(self) -> int:
        """Estimated tokens of all units."""
        return sum(u.tokens for u in self.units)

    def join(self, keep: Iterable[int]) -> str:
        """The text of the kept units in their original order. Two kept units keep the white
        space that followed the first of them in the original; a dropped stretch that crossed a
        paragraph break leaves a blank line. Keeping every unit gives the text back exactly."""
        kept = sorted(set(keep))
        if not kept:
            return ""
        units = self.units
        out = [self.text[: units[kept[0]].start]] if kept[0] == 0 else []
        for pos, i in enumerate(kept):
            u = units[i]
            out.append(self.text[u.start : u.end])
            if pos + 1 < len(kept):
                j = kept[pos + 1]
                if j == i + 1:
                    out.append(self.text[u.end : units[j].start])
                elif units[j].paragraph != u.paragraph:
                    out.append("\n\n")
                else:
                    gap = self.text[u.end : units[i + 1].start]
                    out.append(gap if gap.strip() == "" and gap else " ")
        if kept[-1] == len(units) - 1:
            out.append(self.text[units[-1].end :])
        return "".join(out)


def _structured(lines: Sequence[str]) -> bool:
    if len(lines) < 2:
        return False
    rows = [ln for ln in lines if not _HEADING.match(ln)]
    hits = sum(1 for ln in rows if _STRUCTURED_LINE.match(ln) or "\t" in ln)
    return len(rows) >= 2 and hits * 2 > len(rows)


def _spans_of_paragraph(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(start, end, heading) spans inside one paragraph ``text[start:end]``."""
    lines: list[tuple[int, int]] = []
    offset = start
    for ln in text[start:end].split("\n"):
        if ln.strip():
            lines.append((offset, offset + len(ln)))
        offset += len(ln) + 1
    structured = _structured([text[s:e] for s, e in lines])
    if not structured and not any(_HEADING.match(text[s:e]) for s, e in lines):
        return _sentence_spans(text, start, end)
    spans: list[tuple[int, int, bool]] = []
    prose: tuple[int, int] | None = None
    for s, e in lines:
        if _HEADING.match(text[s:e]):
            if prose is not None:
                spans.extend(_sentence_spans(text, *prose))
                prose = None
            spans.append((s, e, True))
        elif structured:
            spans.append((s, e, False))
        else:
            prose = (prose[0] if prose else s, e)
    if prose is not None:
        spans.extend(_sentence_spans(text, *prose))
    return spans


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    chunk = text[start:end]
    spans: list[tuple[int, int, bool]] = []
    pos = 0
    for m in _SENTENCE_END.finditer(chunk):
        cut = m.start()
        # the closing quote/bracket after the full stop belongs to the sentence
        while cut < len(chunk) and chunk[cut] in "\"')]":
            cut += 1
        piece = chunk[pos:cut]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + pos + lead, start + pos + len(piece.rstrip()), False))
        pos = m.end()
    piece = chunk[pos:]
    if piece.strip():
        lead = len(piece) - len(piece.lstrip())
        spans.append((start + pos + lead, start + pos + len(piece.rstrip()), False))
    return spans


PASSAGE_LINE_CHARS = 100
"""A paragraph is read as one passage a line (retrieved documents joined by single newlines)
when every line is at least this long (hard-wrapped prose wraps shorter), or when every line
starts with the same word of three or more letters (``Document [1](Title: …)``, ``Document
[2]…``)."""

_FIRST_WORD = re.compile(r"\s*([A-Za-z]{3,})\b")


def _passages(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """One paragraph's passages: its lines when they are passages (above), else itself."""
    lines: list[tuple[int, int]] = []
    offset = start
    for ln in text[start:end].split("\n"):
        if ln.strip():
            lines.append((offset, offset + len(ln)))
        offset += len(ln) + 1
    if len(lines) < 2:
        return [(start, end)]
    if all(e - s >= PASSAGE_LINE_CHARS for s, e in lines):
        return lines
    firsts = {m.group(1) if (m := _FIRST_WORD.match(text, s, e)) else None for s, e in lines}
    if len(firsts) == 1 and None not in firsts and not _structured([text[s:e] for s, e in lines]):
        return lines
    return [(start, end)]


def segment(text: str) -> Segmented:
    """Cut ``text`` into units (see the module doc)."""
    units: list[Unit] = []
    paragraph = 0

    def add_paragraph(a: int, b: int) -> None:
        nonlocal paragraph
        if not text[a:b].strip():
            return
        for start, end in _passages(text, a, b):
            for s, e, heading in _spans_of_paragraph(text, start, end):
                tokens = estimate_text_tokens(text[s:e])
                units.append(Unit(s, e, paragraph, tokens, False, heading))
            paragraph += 1

    def add_prose(a: int, b: int) -> None:
        pos = a
        for m in _PARAGRAPH_BREAK.finditer(text, a, b):
            add_paragraph(pos, m.start())
            pos = m.end()
        add_paragraph(pos, b)

    pos = 0
    for m in _FENCE.finditer(text):
        add_prose(pos, m.start())
        s = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        units.append(Unit(s, m.end(), paragraph, estimate_text_tokens(m.group(0)), True, False))
        paragraph += 1
        pos = m.end()
    add_prose(pos, len(text))
    return Segmented(text, tuple(units))


def words(text: str) -> list[str]:
    """Lower-case word tokens (``\\w+``, Unicode): what the scorers count."""
    return [w.lower() for w in _WORD.findall(text)]


_STEMMER = snowballstemmer.stemmer("english")


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The Snowball (Porter 2) English stem of a lower-case word: ``layers``, ``layered`` ->
    ``layer`` (M. F. Porter, "Snowball: A language for stemming algorithms", 2001;
    ``snowballstemmer``)."""
    result: str = _STEMMER.stemWord(word)
    return result


def terms(text: str) -> list[str]:
    """The stems of ``text``'s words: what the query-aware scorers match."""
    return [stem(w) for w in words(text)]


def query_terms(question: str) -> list[str]:
    """The stems of the question's words without :data:`STOPWORDS` (all of them if nothing else
    is left)."""
    all_words = words(question)
    content = [w for w in all_words if w not in STOPWORDS] or all_words
    return [stem(w) for w in content]
