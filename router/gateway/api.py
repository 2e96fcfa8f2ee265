"""HTTP endpoints of the gateway: ``POST /v1/chat/completions`` and ``GET /v1/models``, in
OpenAI's wire format (OpenAI API reference, "Chat" and "Models")."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from router.errors import InvalidInput, Unavailable, error_body
from router.gateway.request import ROUTE_MODEL, ROUTE_PREFIX, parse_call
from router.gateway.service import Call, Gateway, UpstreamFailed
from router.keys import require
from router.service import Router

gateway_api = APIRouter(prefix="/v1", tags=["gateway"])

LANE_HEADER = "x-tierwise-lane"
"""``batch`` defers the call to the batch lane (202 with a result URL, :mod:`router.lane`);
``flex`` answers it through OpenAI's flex processing at batch prices (real time when flex has
no capacity); ``realtime`` answers it now whatever its class's lane."""

WEBHOOK_HEADER = "x-tierwise-webhook"
"""A deferred call's webhook: POSTed its result once it ended (its host must be allowed by
``TIERWISE_LANE_WEBHOOK_HOSTS``)."""


class ChatCompletionOut(BaseModel):
    """OpenAI's chat completion object (API reference, "The chat completion object"), as the
    upstream answered it (an Anthropic answer translated); fields beyond these pass through."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = Field(description='"chat.completion"')
    created: int = Field(description="Unix seconds")
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ModelOut(BaseModel):
    """One entry of ``GET /v1/models`` (OpenAI's model object)."""

    id: str
    object: Literal["model"]
    created: int = Field(description="Unix seconds; 0: routes and catalog entries have none")
    owned_by: str


class ModelListOut(BaseModel):
    """``GET /v1/models``: OpenAI's list shape."""

    object: Literal["list"]
    data: list[ModelOut]


CHAT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
        },
    },
    "responses": {
        "200": {
            "description": "The completion, or with ``stream`` its server-sent events",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionOut"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    },
}
"""The call's OpenAPI: the handler reads the body itself (to pass it through as sent)."""


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _headers(gateway: Gateway, call: Call, served: str | None) -> dict[str, str]:
    """The routing, as response headers: the decision, what served it, how many upstream
    calls, the handler's own time outside upstream calls (parsing, routing, recording,
    translation; ms: the HTTP server's and the SDK's share is not in it, ``bench/gateway.py``
    measures the whole) and, in shadow mode, the model it would have chosen."""
    d = call.decision
    headers = {
        "x-tierwise-decision-id": d.decision_id,
        "x-tierwise-task-class": d.task_class,
        "x-tierwise-model": served or call.last_model,
        "x-tierwise-tier": d.tier,
        "x-tierwise-sampled": "true" if d.sampled else "false",
        "x-tierwise-attempts": str(gateway.upstream_calls(call)),
        "x-tierwise-overhead-ms": f"{gateway.overhead_ms(call):.3f}",
    }
    if call.request.shadow_model is not None:
        headers["x-tierwise-shadow"] = d.model
    headers.update(call.headers)
    return headers


@gateway_api.post(
    "/chat/completions",
    response_model=None,
    openapi_extra=CHAT_OPENAPI,
    dependencies=[Depends(require("route"))],
)
async def chat_completions(request: Request) -> Response:
    """An OpenAI Chat Completions call, routed. ``model: "tierwise/<task_type>"`` routes by the
    routing table; a catalog model is served as named while tierwise records what it would
    have chosen (shadow mode). Streams when ``stream`` is true. A request tierwise or the
    chosen upstream cannot take is answered 400 (OpenAI's status for an invalid request) with
    ``param`` naming the field, and nothing is stored unless an upstream was already called.
    ``X-Tierwise-Lane: batch`` (or a class on lane ``batch``) queues the call for the
    providers' batch APIs instead: 202 with the batch object and ``Location`` its result URL."""
    try:
        return await _chat_completions(request)
    except InvalidInput as exc:
        body = error_body(exc.code, exc.message, exc.field, 400)
        return JSONResponse({"error": body}, status_code=400)


async def _chat_completions(request: Request) -> Response:
    gateway = _gateway(request)
    router: Router = request.app.state.router
    raw = await request.body()
    try:
        payload: Any = json.loads(raw, parse_constant=_no_constant)
        checked = parse_call(payload, request.headers, router.snapshot)
    except RecursionError as exc:
        raise InvalidInput("the body nests too deeply", field="body") from exc
    except ValueError as exc:
        raise InvalidInput("the body is not valid JSON", field="body") from exc
    caller = getattr(request.state, "caller", None)
    lane = request.headers.get(LANE_HEADER)
    if lane not in (None, "realtime", "batch", "flex"):
        raise InvalidInput(
            f"{LANE_HEADER}: 'realtime', 'batch' or 'flex', not {lane!r}", field=LANE_HEADER
        )
    call = gateway.start(checked, caller=caller)
    lane = lane or router.snapshot.policy.settings_for(call.decision.task_class).lane
    call.flex = lane == "flex"
    if lane == "batch":
        deferred = await request.app.state.lane.defer(
            call, caller, webhook=request.headers.get(WEBHOOK_HEADER)
        )
        return JSONResponse(
            deferred,
            status_code=202,
            headers={**_headers(gateway, call, None), "location": deferred["result_url"]},
        )
    if not checked.stream:
        try:
            completion = await gateway.complete(call)
        except UpstreamFailed as exc:
            return _failed(gateway, call, exc)
        # While the database is unreachable the call's rows are spooled before the answer
        # goes back; one the spool refused stays in memory (the answer is not withheld: the
        # upstream has been paid for it).
        with contextlib.suppress(Unavailable):
            await router.writer.durable()
        served = next((a["model"] for a in call.attempts if a["status"] == "ok"), None)
        served = served or call.state.get("answered_by")
        return Response(
            json.dumps(completion.body, separators=(",", ":")),
            media_type="application/json",
            headers=_headers(gateway, call, served),
        )
    try:
        served, stream = await gateway.open_stream(call)
    except UpstreamFailed as exc:
        return _failed(gateway, call, exc)
    return StreamingResponse(
        gateway.relay(call, served, stream),
        media_type="text/event-stream",
        headers={**_headers(gateway, call, served), "cache-control": "no-cache"},
        background=BackgroundTask(gateway.settle, call, served, stream),
    )


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity``, ``-Infinity``: Python's JSON reader takes them, JSON does not."""
    raise ValueError(f"{name} is not valid JSON")


def _failed(gateway: Gateway, call: Call, exc: UpstreamFailed) -> JSONResponse:
    headers = _headers(gateway, call, None)
    if exc.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)


@gateway_api.get("/models", response_model=ModelListOut, dependencies=[Depends(require("route"))])
async def models(request: Request) -> dict[str, Any]:
    """The routable task types (``tierwise/<task_type>``, from the policy's rules, and
    ``tierwise`` itself) and the catalog's models (shadow mode), in OpenAI's list shape:
    ``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``."""
    router: Router = request.app.state.router
    snapshot = router.snapshot
    created = 0  # OpenAI's field (Unix seconds); routes and catalog entries have no such date
    task_types = sorted({t for rule in snapshot.policy.spec.rules for t in rule.task_types})
    data = [{"id": ROUTE_MODEL, "object": "model", "created": created, "owned_by": "tierwise"}]
    data += [
        {"id": ROUTE_PREFIX + t, "object": "model", "created": created, "owned_by": "tierwise"}
        for t in task_types
    ]
    data += [
        {"id": name, "object": "model", "created": created, "owned_by": price.provider}
        for name, price in sorted(snapshot.catalog.items())
    ]
    return {"object": "list", "data": data}
