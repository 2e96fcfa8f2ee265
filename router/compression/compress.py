"""Compressing one text, and one chat request, with a pipeline of compressors.

What is never compressed in a chat request: system and developer messages, assistant
messages, tool definitions (``tools`` is not touched), content given as a list of parts, code
blocks (fenced), and the final user question. The final user message is read as paragraphs
(split at blank lines): the last one is the question; with three or more, the first is its
instruction when it is short (at most :data:`PREAMBLE_TOKENS`) and is kept too; what lies
between is context. Earlier ``user`` and ``tool`` messages are context as a whole. Each piece
of context is compressed to the target ratio on its own.

``ratio`` is the target share of a context's estimated tokens that is kept (0.3 keeps about
30%); the achieved ratio is reported beside it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.compression.compressors import COMPRESSORS, Options
from router.compression.guard import dropped_values, field_units, named_values
from router.compression.text import segment
from router.tokens import estimate_text_tokens

PREAMBLE_TOKENS = 100
"""The longest first paragraph of the final user message read as its instruction (kept)."""

MIN_SAVING = 0.05
"""A request whose compression would save less than this share of its context tokens is sent
unchanged: a small saving is not worth a changed prompt (nor a provider's prompt-cache miss)."""

CONTEXT_ROLES = frozenset({"user", "tool"})
"""Roles of earlier messages whose text is context."""

_BREAK = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True, slots=True)
class Compressed:
    """One text compressed: the text sent, estimated tokens before and after, and the named
    values the compression would have dropped (then ``text`` is the original)."""

    text: str
    original_tokens: int
    tokens: int
    dropped: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        """Achieved ratio: tokens kept / original tokens (1.0 for an empty text)."""
        return self.tokens / self.original_tokens if self.original_tokens else 1.0


def check_pipeline(pipeline: Sequence[str]) -> None:
    """Raises ValueError naming an unknown compressor."""
    for name in pipeline:
        if name not in COMPRESSORS:
            raise ValueError(
                f"unknown compressor '{name}' (known: {', '.join(sorted(COMPRESSORS))})"
            )


def compress_text(
    text: str,
    question: str,
    pipeline: Sequence[str],
    ratio: float,
    *,
    guard: bool = False,
    options: Options | None = None,
) -> Compressed:
    """Compress ``text`` for ``question`` by running ``pipeline`` in order (each compressor sees
    what the previous one kept), so that at most ``ratio`` of its estimated tokens remain.
    Code blocks always stay; with ``guard`` (the extraction guard) so does every unit holding
    a field, and when the result would lose a value the question names, the text is returned
    unchanged with ``dropped`` naming the values.

    Raises:
        ValueError: an unknown compressor, or ratio outside (0, 1].
    """
    check_pipeline(pipeline)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    opts = options or Options()
    seg = segment(text)
    total = seg.tokens
    forced = {i for i, u in enumerate(seg.units) if u.code}
    if guard:
        forced |= field_units(seg)
    budget = int(ratio * total) - sum(seg.units[i].tokens for i in forced)
    candidates = [i for i in range(len(seg.units)) if i not in forced]
    for name in pipeline:
        kept = COMPRESSORS[name](seg, candidates, question, max(0, budget), opts)
        candidates = [i for i in candidates if i in set(kept)]
    kept_units = sorted(forced | set(candidates))
    if len(kept_units) == len(seg.units):
        return Compressed(text, total, total)
    out = seg.join(kept_units)
    tokens = sum(seg.units[i].tokens for i in kept_units)
    if guard:
        lost = dropped_values(named_values(question), text, out)
        if lost:
            return Compressed(text, total, total, tuple(lost))
    return Compressed(out, total, tokens)


@dataclass
class MessagesCompressed:
    """A chat request's messages compressed. ``status``: ``compressed``, or ``unchanged`` with
    ``reason`` saying why (no context, nothing dropped, a saving under :data:`MIN_SAVING`, or
    the extraction guard found a named value the compression would drop: ``dropped`` names
    them)."""

    messages: list[dict[str, Any]]
    original_tokens: int
    tokens: int
    status: str
    reason: str
    dropped: list[str] = field(default_factory=list)

    @property
    def saved_tokens(self) -> int:
        """Estimated input tokens the compression saved."""
        return self.original_tokens - self.tokens


def split_final(text: str) -> tuple[int, int]:
    """The context span ``(start, end)`` of the final user message (module doc); ``(0, 0)``
    when it is all question."""
    breaks = list(_BREAK.finditer(text))
    if not breaks:
        return 0, 0
    end = breaks[-1].start()
    start = 0
    if len(breaks) >= 2 and estimate_text_tokens(text[: breaks[0].start()]) <= PREAMBLE_TOKENS:
        start = breaks[0].end()
    return start, end


def question_of(messages: Sequence[dict[str, Any]]) -> tuple[int | None, str]:
    """The index of the final user message and its question (its last paragraph)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str):
                return index, ""
            _, end = split_final(content)
            return index, content[end:].strip() if end else content
    return None, ""


def compress_messages(
    messages: Sequence[dict[str, Any]],
    pipeline: Sequence[str],
    ratio: float,
    *,
    guard: bool = False,
    options: Options | None = None,
) -> MessagesCompressed:
    """Compress the context of a chat request (module doc); the messages are copied, never
    changed in place. With ``guard``, a request any of whose pieces would drop a value the
    question names is left whole.

    Raises:
        ValueError: an unknown compressor, or ratio outside (0, 1].
    """
    check_pipeline(pipeline)
    final, question = question_of(messages)
    out = [dict(m) for m in messages]
    before = after = 0
    dropped: list[str] = []
    if final is None:
        return MessagesCompressed(out, 0, 0, "unchanged", "no user message")
    for index, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str):
            continue
        if index == final:
            start, end = split_final(content)
            if end <= start:
                continue
        elif index < final and message.get("role") in CONTEXT_ROLES:
            start, end = 0, len(content)
        else:
            continue
        piece = compress_text(
            content[start:end], question, pipeline, ratio, guard=guard, options=options
        )
        before += piece.original_tokens
        after += piece.tokens
        dropped.extend(v for v in piece.dropped if v not in dropped)
        out[index]["content"] = content[:start] + piece.text + content[end:]
    if dropped:
        return MessagesCompressed(
            [dict(m) for m in messages],
            before,
            before,
            "unchanged",
            "extraction guard: compression would drop "
            + ", ".join(f"'{v}'" for v in dropped)
            + ", which the question names",
            dropped,
        )
    if before == 0:
        return MessagesCompressed([dict(m) for m in messages], 0, 0, "unchanged", "no context")
    if after > before * (1 - MIN_SAVING):
        under = " under the extraction guard" if guard else ""
        reason = (
            f"nothing to drop{under}"
            if after >= before
            else f"saves {1 - after / before:.1%} < {MIN_SAVING:.0%}{under}"
        )
        return MessagesCompressed([dict(m) for m in messages], before, before, "unchanged", reason)
    return MessagesCompressed(out, before, after, "compressed", f"{after}/{before} tokens kept")
