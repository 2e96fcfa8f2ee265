"""A batch input file, checked line by line before anything is routed or stored.

Each line is OpenAI's batch request object (OpenAI "Batch API", "The request input object"):
``{"custom_id": str, "method": "POST", "url": "/v1/chat/completions", "body": {...}}``, its body
a Chat Completions request that names ``tierwise/<task_type>`` (routed) or a catalog model, as
a gateway call does (:func:`router.gateway.request.parse_call`). A file that breaks a rule is
refused whole, naming the first bad line (1-based), as the providers' own validation does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from router.errors import InvalidInput, NotFound
from router.gateway.request import GatewayCall, parse_call
from router.table import RoutingSnapshot

BATCH_ENDPOINT = "/v1/chat/completions"
"""The one endpoint the lane serves (``endpoint`` of a batch, ``url`` of every line)."""

MAX_LINES = 50_000
"""Lines one input file may hold (OpenAI Batch API: 50,000 requests per batch)."""

MAX_CUSTOM_ID = 512
"""Characters of a caller's custom id (kept as given; upstream ids are tierwise's own)."""


class BadBatchInput(InvalidInput):
    """An input file or batch request tierwise refuses (400, OpenAI's status for it)."""

    status = 400


@dataclass(frozen=True, slots=True)
class InputLine:
    """One checked line: its 1-based number, the caller's custom id and the parsed call."""

    line: int
    custom_id: str
    call: GatewayCall


def _bad(line: int, what: str, field: str) -> BadBatchInput:
    return BadBatchInput(f"input file line {line}: {what}", field=f"line {line}: {field}")


def parse_input(data: bytes, snapshot: RoutingSnapshot) -> list[InputLine]:
    """Check every line of an input file (UTF-8 JSONL; blank lines are skipped).

    Raises:
        BadBatchInput: the file is empty, not UTF-8, or holds more than :data:`MAX_LINES`
            lines; or a line is not a JSON object, lacks or repeats a ``custom_id``, has a
            ``method`` other than POST or a ``url`` other than :data:`BATCH_ENDPOINT`, asks to
            stream, or its body is invalid or names an unknown model. ``field`` is
            ``line N: <field>`` (``body.messages[0].content``, ``custom_id``, ``model``).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBatchInput(f"the input file is not UTF-8: {exc}", field="file") from exc
    lines: list[InputLine] = []
    seen: dict[str, int] = {}
    # Lines end at "\n" only: str.splitlines would also split at U+2028 and others, which a
    # JSON string may hold raw.
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        if len(lines) >= MAX_LINES:
            raise BadBatchInput(
                f"the input file holds more than {MAX_LINES:,} requests", field="file"
            )
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise _bad(number, f"not JSON: {exc}", "line") from exc
        if not isinstance(row, dict):
            raise _bad(number, "not a JSON object", "line")
        custom_id = row.get("custom_id")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
            raise _bad(
                number, f"custom_id must be a string of 1-{MAX_CUSTOM_ID} characters", "custom_id"
            )
        if custom_id in seen:
            raise _bad(
                number, f"custom_id {custom_id!r} repeats line {seen[custom_id]}", "custom_id"
            )
        seen[custom_id] = number
        if row.get("method") != "POST":
            raise _bad(number, 'method must be "POST"', "method")
        if row.get("url") != BATCH_ENDPOINT:
            raise _bad(number, f'url must be "{BATCH_ENDPOINT}"', "url")
        body = row.get("body")
        if not isinstance(body, dict):
            raise _bad(number, "body must be a JSON object", "body")
        if body.get("stream") is True:
            raise _bad(number, "a batch request cannot stream", "body.stream")
        try:
            call = parse_call(body, {}, snapshot)
        except NotFound as exc:
            raise _bad(number, exc.message, f"body.{exc.field or 'model'}") from exc
        except InvalidInput as exc:
            raise _bad(number, exc.message, f"body.{exc.field or 'body'}") from exc
        lines.append(InputLine(number, custom_id, call))
    if not lines:
        raise BadBatchInput("the input file holds no requests", field="file")
    return lines
