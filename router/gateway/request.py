"""What a gateway call asks for: the OpenAI Chat Completions request, checked, and the routing
it names (a task type to route, or a catalog model for shadow mode).

Only what tierwise reads is checked here (``model``, ``messages``, ``stream``,
``stream_options``, ``tools``); every other parameter passes through to the upstream as sent,
and the upstream judges it. Bad input raises :class:`~router.errors.InvalidInput` naming the
field before anything is routed or stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.errors import InvalidInput, NotFound, field_path
from router.schemas import (
    ID_PATTERN,
    MAX_MESSAGES,
    MAX_TOOLS,
    TASK_TYPE_PATTERN,
    JSONLimitError,
    Message,
    check_json,
)
from router.table import RoutingSnapshot
from router.tokens import estimate_message_tokens

ROUTE_PREFIX = "tierwise/"
"""``model: "tierwise/<task_type>"`` routes by the routing table."""

ROUTE_MODEL = "tierwise"
"""``model: "tierwise"`` routes by the task type in :data:`TASK_TYPE_HEADER`."""

TASK_TYPE_HEADER = "x-tierwise-task-type"
REQUEST_ID_HEADER = "x-tierwise-request-id"
ITEM_ID_HEADER = "x-tierwise-item-id"
NAMESPACE_HEADER = "x-tierwise-namespace"
"""An explicit tenant namespace within the caller's key (the semantic cache's scope)."""

SHADOW_TASK_TYPE = "default"
"""The task type of a shadow-mode call that names none (:data:`TASK_TYPE_HEADER`)."""

_TASK_TYPE = re.compile(TASK_TYPE_PATTERN)
_ID = re.compile(ID_PATTERN)


class ModelNotFound(NotFound):
    """The ``model`` names neither ``tierwise/<task_type>`` nor a catalog model (404, OpenAI's
    code ``model_not_found``)."""

    code = "model_not_found"


class ChatFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class ChatTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(pattern=r"^function$")
    function: ChatFunction


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = Field(default=False, strict=True)


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: the fields of a Chat Completions request tierwise reads
    (OpenAI API reference, "Create chat completion"); the rest are allowed and passed through
    to the upstream, within the limits of free JSON (depth 32, 10,000 items per list, 2M
    characters per string)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    tools: list[ChatTool] | None = Field(default=None, max_length=MAX_TOOLS)


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One checked gateway call.

    ``body`` is the request as sent (passed upstream with ``model`` replaced); ``task_type``
    what is routed; ``shadow_model`` the catalog model the caller named (shadow mode) or None;
    ``input_tokens`` the offline estimate from the messages (:mod:`router.tokens`);
    ``include_usage`` whether the caller asked for the usage-only final chunk.
    """

    body: dict[str, Any]
    messages: list[dict[str, Any]]
    task_type: str
    shadow_model: str | None
    stream: bool
    include_usage: bool
    has_tools: bool
    input_tokens: int
    request_id: str | None
    item_id: str | None
    task_type_field: str = "model"
    """Where the task type was read: ``model`` or the :data:`TASK_TYPE_HEADER` header."""
    namespace: str | None = None


def _header(headers: Mapping[str, str], name: str, pattern: re.Pattern[str], size: int) -> str:
    value = headers[name]
    if not value or len(value) > size or not pattern.fullmatch(value):
        raise InvalidInput(f"{name}: at most {size} characters of {pattern.pattern}", field=name)
    return value


def parse_call(payload: Any, headers: Mapping[str, str], snapshot: RoutingSnapshot) -> GatewayCall:
    """Check a gateway request (the decoded JSON body and the request's headers, lower-case
    names) and resolve what it routes.

    ``model`` is ``tierwise/<task_type>``, ``tierwise`` with the task type in
    ``X-Tierwise-Task-Type``, or a catalog model (by name, API id or alias: shadow mode, task
    type from the header, else ``default``). ``X-Tierwise-Request-Id`` (8-48 characters) makes
    the decision repeatable, as ``request_id`` does for ``POST /v1/route``;
    ``X-Tierwise-Item-Id`` names the held-out item a replayed call stands for;
    ``X-Tierwise-Namespace`` (an id of ``ID_PATTERN``) a tenant within the caller's key, for the
    cache.

    Every part of the body, passed through or not, is held to the limits of
    :func:`router.schemas.check_json` (nesting depth 32, 10,000 items per list or object, 2M
    characters per string); messages, content parts and tools to theirs (1000, 500, 128).

    Raises:
        InvalidInput: the body is not a JSON object, is past a limit, a checked field is
            invalid, or a header is malformed (``field`` names it: ``messages[0].content``,
            ``model``, ``x-tierwise-request-id``).
        ModelNotFound: ``model`` is neither routable nor in the catalog (404, field ``model``).
    """
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    try:  # the passthrough too: depth, list lengths, string sizes (router.schemas limits)
        check_json(payload, text=False)
    except JSONLimitError as exc:
        raise InvalidInput(str(exc), field=exc.path or "body") from exc
    try:
        body = ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = field_path(err["loc"]) or "body"
        raise InvalidInput(f"{where}: {err['msg']}", field=where) from exc
    header_type = (
        _header(headers, TASK_TYPE_HEADER, _TASK_TYPE, 200) if TASK_TYPE_HEADER in headers else None
    )
    shadow_model: str | None = None
    task_type_field = "model"
    if body.model == ROUTE_MODEL:
        if header_type is None:
            raise InvalidInput(
                f'model "{ROUTE_MODEL}" needs the task type in the {TASK_TYPE_HEADER} header, '
                f'or name it in the model: "{ROUTE_PREFIX}<task_type>"',
                field="model",
            )
        task_type = header_type
        task_type_field = TASK_TYPE_HEADER
    elif body.model.startswith(ROUTE_PREFIX):
        task_type = body.model.removeprefix(ROUTE_PREFIX)
        if not task_type or len(task_type) > 200 or not _TASK_TYPE.fullmatch(task_type):
            raise InvalidInput(
                f'model: "{ROUTE_PREFIX}<task_type>" with a task type of {TASK_TYPE_PATTERN}',
                field="model",
            )
    else:
        name = snapshot.canonical(body.model)
        if name not in snapshot.catalog:
            raise ModelNotFound(
                f"model '{body.model}' is neither '{ROUTE_PREFIX}<task_type>' nor a catalog "
                "model (GET /v1/models lists both)",
                field="model",
            )
        shadow_model = name
        task_type = header_type or SHADOW_TASK_TYPE
        task_type_field = TASK_TYPE_HEADER
    request_id = (
        _header(headers, REQUEST_ID_HEADER, _ID, 48) if REQUEST_ID_HEADER in headers else None
    )
    if request_id is not None and len(request_id) < 8:
        raise InvalidInput(f"{REQUEST_ID_HEADER}: at least 8 characters", field=REQUEST_ID_HEADER)
    item_id = headers.get(ITEM_ID_HEADER) or None
    if item_id is not None and len(item_id) > 200:
        raise InvalidInput(f"{ITEM_ID_HEADER}: at most 200 characters", field=ITEM_ID_HEADER)
    namespace = (
        _header(headers, NAMESPACE_HEADER, _ID, 200) if NAMESPACE_HEADER in headers else None
    )
    messages: list[dict[str, Any]] = payload["messages"]
    return GatewayCall(
        body=payload,
        messages=messages,
        task_type=task_type,
        shadow_model=shadow_model,
        stream=body.stream,
        include_usage=body.stream_options is not None and body.stream_options.include_usage,
        has_tools=bool(body.tools),
        input_tokens=estimate_message_tokens(messages),
        request_id=request_id,
        item_id=item_id,
        task_type_field=task_type_field,
        namespace=namespace,
    )
