"""Batch calls: many chat calls for one model submitted at once, answered within a window.

The shapes every adapter shares (:class:`BatchPoll`, :class:`BatchItemError`, :class:`BatchLimits`),
the split of a submission into batches within a provider's limits (:func:`plan_batches`), and
the readers of both providers' result files (:func:`read_openai_results`,
:func:`read_anthropic_results`). Results are matched by ``custom_id`` only, never by position
(both APIs say results may come in any order); an id that was not submitted, or that comes a
second time, is rejected and logged, never booked. Reading a results file never raises: a line
that cannot be read is logged and skipped, and the id it would have answered stays missing
(the caller treats a missing id of an ended batch like an expired one).

References: OpenAI "Batch API" guide and API reference (``POST /v1/files`` with purpose
``batch``; ``POST /v1/batches``; the batch object; output and error file lines
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``);
Anthropic "Message Batches" (``POST /v1/messages/batches`` with ``requests: [{"custom_id",
"params"}]``; the message batch object; result lines ``{"custom_id", "result": {"type":
"succeeded" | "errored" | "expired" | "canceled", ...}}``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from router.errors import InvalidInput
from router.providers.base import ChatRequest, ChatResponse, Completion

log = logging.getLogger(__name__)

BatchItem = tuple[str, ChatRequest]
"""One request of a batch: its custom id and the call."""

BodyItem = tuple[str, dict[str, Any]]
"""One passed-through request of a batch: its custom id and an OpenAI Chat Completions body
(``model`` already the id to send)."""

T = TypeVar("T")

ItemFailure = Literal["errored", "expired", "canceled"]


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """A batch item without an answer. ``kind``: ``errored`` (the call failed; ``transient``
    says whether trying it again may help), ``expired`` (the window ran out before it ran) or
    ``canceled`` (the batch was cancelled before it ran). ``status`` is the HTTP status inside
    an OpenAI result line, when there was one."""

    kind: ItemFailure
    message: str
    transient: bool = False
    status: int | None = None


@dataclass(frozen=True, slots=True)
class BatchPoll:
    """What one look at a batch found.

    ``ended``: the provider will add no more results (completed, expired, cancelled or
    failed; ``status`` is the provider's own word). ``results``: custom id -> the answer or
    why there is none, for the ids read so far (all of them once ended; an ended batch's id
    missing here never ran). ``rejected``: ids in the results that were not submitted or came
    twice (logged; never in ``results`` a second time).
    """

    ended: bool
    status: str
    results: Mapping[str, ChatResponse | BatchItemError] = field(default_factory=dict)
    rejected: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class ChatBatchPoll:
    """:class:`BatchPoll` of a passed-through batch (the batch lane): each answer is a
    :class:`~router.providers.base.Completion`, an OpenAI ``chat.completion`` body (translated
    from Anthropic's Messages reply where that is the provider) and the provider's own usage."""

    ended: bool
    status: str
    results: Mapping[str, Completion | BatchItemError] = field(default_factory=dict)
    rejected: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """A provider's limits for one batch: requests, and bytes of the submitted payload."""

    max_requests: int
    max_bytes: int


OPENAI_LIMITS = BatchLimits(50_000, 200 * 1024 * 1024)
"""OpenAI Batch API: up to 50,000 requests and 200 MB of input file."""

ANTHROPIC_LIMITS = BatchLimits(100_000, 256 * 1024 * 1024)
"""Anthropic Message Batches: up to 100,000 requests and 256 MB of request body."""

_ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def check_anthropic_custom_id(custom_id: str) -> None:
    """Raises InvalidInput unless ``custom_id`` is 1-64 characters of ``[a-zA-Z0-9_-]``
    (Anthropic Message Batches)."""
    if not _ANTHROPIC_ID.match(custom_id):
        raise InvalidInput(
            f"custom_id {custom_id!r} is not 1-64 characters of [a-zA-Z0-9_-]", field="custom_id"
        )


def plan_batches(
    items: Sequence[tuple[str, T]], limits: BatchLimits, size_of: Callable[[tuple[str, T]], int]
) -> list[list[tuple[str, T]]]:
    """Split ``items`` into batches of at most ``limits.max_requests`` items and
    ``limits.max_bytes`` bytes (``size_of`` gives one item's bytes, a newline included), in
    order.

    Raises:
        InvalidInput: one item alone is larger than ``max_bytes``, or custom ids repeat.
    """
    ids = [custom_id for custom_id, _ in items]
    if len(set(ids)) != len(ids):
        raise InvalidInput("custom ids of one submission must be unique", field="custom_id")
    batches: list[list[tuple[str, T]]] = []
    current: list[tuple[str, T]] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if item_size > limits.max_bytes:
            raise InvalidInput(
                f"request {item[0]} is {item_size} bytes, over the {limits.max_bytes} a batch "
                "may hold",
                field="custom_id",
            )
        if current and (len(current) >= limits.max_requests or size + item_size > limits.max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        batches.append(current)
    return batches


class _Matcher(Generic[T]):
    """Collects results by custom id: the first answer for a submitted id counts; an unknown or
    repeated id is rejected and logged."""

    def __init__(self, batch_id: str, expected: Collection[str]) -> None:
        self.batch_id = batch_id
        self.expected = set(expected)
        self.results: dict[str, T | BatchItemError] = {}
        self.rejected: list[str] = []

    def add(self, custom_id: str, result: T | BatchItemError) -> None:
        if custom_id not in self.expected:
            log.warning(
                "batch %s: result for unknown custom_id %r rejected", self.batch_id, custom_id
            )
            self.rejected.append(custom_id)
        elif custom_id in self.results:
            log.warning("batch %s: duplicate result for %r rejected", self.batch_id, custom_id)
            self.rejected.append(custom_id)
        else:
            self.results[custom_id] = result


def _json_lines(text: str, batch_id: str) -> Iterable[dict[str, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("batch %s: line %d is not JSON, skipped", batch_id, number)
            continue
        if not isinstance(row, dict) or not isinstance(row.get("custom_id"), str):
            log.warning("batch %s: line %d has no custom_id, skipped", batch_id, number)
            continue
        yield row


_OPENAI_ITEM_CODES: dict[str, ItemFailure] = {
    "batch_expired": "expired",
    "batch_cancelled": "canceled",
}


def read_openai_results(
    texts: Iterable[str],
    batch_id: str,
    expected: Collection[str],
    parse: Callable[[dict[str, Any]], T],
) -> tuple[dict[str, T | BatchItemError], list[str]]:
    """Results of an OpenAI batch from its output and error files' text (JSONL), by custom id.

    Each line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"} |
    null, "error": {"code", "message"} | null}``. A line whose ``response.status_code`` is 200
    is an answer (``parse`` turns its ``body``, a chat completion object, into a
    :class:`ChatResponse`); any other status is an ``errored`` item even though the line sits
    in the output file (transient for 408, 409, 429 and 5xx). An ``error`` line is
    ``expired`` for code ``batch_expired``, ``canceled`` for ``batch_cancelled``, else
    ``errored`` (permanent). A body ``parse`` cannot read is an ``errored`` item. Returns
    (results, rejected ids). Never raises.
    """
    matcher: _Matcher[T] = _Matcher(batch_id, expected)
    for text in texts:
        for row in _json_lines(text, batch_id):
            matcher.add(row["custom_id"], _openai_item(row, parse))
    return matcher.results, matcher.rejected


def _openai_item(row: dict[str, Any], parse: Callable[[dict[str, Any]], T]) -> T | BatchItemError:
    response = row.get("response")
    error = row.get("error")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status = response["status_code"]
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            try:
                return parse(body)
            except Exception as exc:  # a body the SDK types cannot read: this item alone
                return BatchItemError("errored", f"unreadable reply: {exc}", status=status)
        detail = body.get("error") if isinstance(body, dict) else None
        transient = status in (408, 409, 429) or status >= 500
        return BatchItemError("errored", f"HTTP {status}: {detail}", transient, status)
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        kind = _OPENAI_ITEM_CODES.get(code, "errored")
        return BatchItemError(kind, f"{code}: {error.get('message')}")
    return BatchItemError("errored", "a result line with neither response nor error")


ANTHROPIC_TRANSIENT = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
)
"""Anthropic error types worth a retry (Anthropic "Errors": 429, 500, 504, 529); the rest
(``invalid_request_error``, ``authentication_error``, ``permission_error``,
``not_found_error``, ``request_too_large``, ``billing_error``) fail the same way again."""


def read_anthropic_results(
    rows: Iterable[Mapping[str, Any]],
    batch_id: str,
    expected: Collection[str],
    parse: Callable[[dict[str, Any]], T],
) -> tuple[dict[str, T | BatchItemError], list[str]]:
    """Results of an Anthropic message batch from its result rows (the ``.jsonl`` lines as
    dicts), by custom id: ``{"custom_id", "result": {"type": "succeeded", "message"} |
    {"type": "errored", "error": {"type": "error", "error": {"type", "message"}}} |
    {"type": "expired"} | {"type": "canceled"}}``. Only ``succeeded`` carries a message
    (``parse`` reads it); ``errored`` is transient only for :data:`ANTHROPIC_TRANSIENT` types.
    Returns (results, rejected ids). Never raises (an unreadable row is logged and skipped).
    """
    matcher: _Matcher[T] = _Matcher(batch_id, expected)
    for row in rows:
        custom_id = row.get("custom_id")
        result = row.get("result")
        if not isinstance(custom_id, str) or not isinstance(result, dict):
            log.warning("batch %s: a result row without custom_id or result, skipped", batch_id)
            continue
        matcher.add(custom_id, _anthropic_item(result, parse))
    return matcher.results, matcher.rejected


def _anthropic_item(
    result: dict[str, Any], parse: Callable[[dict[str, Any]], T]
) -> T | BatchItemError:
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        try:
            return parse(result["message"])
        except Exception as exc:  # a message the SDK types cannot read: this item alone
            return BatchItemError("errored", f"unreadable message: {exc}")
    if kind == "errored":
        outer = result.get("error")
        inner = outer.get("error") if isinstance(outer, dict) else None
        error_type = str(inner.get("type")) if isinstance(inner, dict) else "unknown"
        message = str(inner.get("message")) if isinstance(inner, dict) else ""
        return BatchItemError(
            "errored", f"{error_type}: {message}", error_type in ANTHROPIC_TRANSIENT
        )
    if kind in ("expired", "canceled"):
        return BatchItemError(kind, kind)
    return BatchItemError("errored", f"unknown result type {kind!r}")
