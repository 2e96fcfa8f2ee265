"""HTTP endpoints of the data plane: route, outcomes, routing table; each needs an API key's
scope once keys exist (:func:`router.keys.require`)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.decide import RouteDecision
from router.errors import InvalidInput
from router.keys import OPENAPI_SECURITY, authenticate, require
from router.outcomes import OutcomeReport
from router.schemas import (
    MAX_OUTCOMES_PER_REQUEST,
    OutcomeIn,
    OutcomeResultOut,
    OutcomesResponse,
    RouteRequest,
    RouteResponse,
    RoutingEntryOut,
    RoutingTableOut,
    UnknownTaskTypeOut,
    UnknownTaskTypesOut,
)
from router.service import Router
from router.tokens import estimate_message_tokens

api = APIRouter(prefix="/v1", tags=["router"])

_outcomes_adapter: TypeAdapter[list[OutcomeIn]] = TypeAdapter(list[OutcomeIn])


async def get_router(request: Request) -> Router:
    """The app's router (async: a plain ``def`` dependency would cost a thread-pool hop on every
    call)."""
    router: Router = request.app.state.router
    return router


RouterDep = Annotated[Router, Depends(get_router)]
READ = [Depends(require("read-samples"))]


@api.post("/route", response_model=RouteResponse, openapi_extra={"security": OPENAPI_SECURITY})
async def route(body: RouteRequest, request: Request) -> Response:
    """Which model for this request? Answered from the in-memory routing snapshot; the
    decision records the caller's API key id (scope ``route``). A task type the policy does
    not know is routed as ``default`` or refused with 422 (the policy's
    ``unknown_task_types``). While the database is unreachable the decision is spooled to disk
    before the answer; 503 with ``Retry-After`` when the spool is full."""
    return Response(await _answer(request, body), media_type="application/json")


async def _answer(request: Request, body: RouteRequest) -> bytes:
    """The decision for a validated route request, recorded, as its JSON body. Both ways in
    (:func:`route` and :class:`RouteShortcut`) answer through here.

    Raises:
        TierwiseError: 401/403 (the key), 422 (no tokens; an unknown task type the policy
            rejects), 503 (no policy; the database down and the spool full).
    """
    # The key checked inline and the router read off the app, not through dependencies: each
    # dependency FastAPI solves costs the hot path microseconds (bench/route.py).
    caller = authenticate(request, "route")
    if body.input_tokens is not None:
        tokens = body.input_tokens
    elif body.messages is not None:
        tokens = estimate_message_tokens(m.model_dump() for m in body.messages)
    else:
        raise InvalidInput("input_tokens: give input_tokens or messages", field="input_tokens")
    router: Router = request.app.state.router
    d = router.route(
        body.task_type,
        tokens,
        body.has_tool_calls,
        body.metadata,
        request_id=body.request_id,
        item_id=body.item_id,
        caller=caller,
    )
    structlog.contextvars.bind_contextvars(decision_id=d.decision_id)
    await router.writer.durable()  # no wait unless spooling: then until it is on disk
    return _route_json(d)


_ROUTE_FIELDS = tuple(RouteResponse.model_fields)


def _route_json(d: RouteDecision) -> bytes:
    """The decision as the JSON body of :class:`RouteResponse`: its fields of the decision, in
    its order, compact (orjson: a fifth of the time of validating and dumping the model; and
    returning the model would have FastAPI validate it again and run jsonable_encoder)."""
    return orjson.dumps({name: getattr(d, name) for name in _ROUTE_FIELDS})


_FULL_PATH = "tierwise.route_full_path"
"""Scope key set when :class:`RouteShortcut` hands a request to the documented endpoint."""

_JSON = b"application/json"


class RouteShortcut(Route):
    """``POST /v1/route``'s common case without FastAPI's request machinery: placed first in
    the app's routes, it reads the body, validates it with :class:`RouteRequest` straight from
    the JSON bytes (pydantic-core's parser) and answers through the same :func:`_answer` as
    :func:`route`. Every other request (another method, a body that is not
    ``application/json``, one that does not validate) goes, with its body, to the documented
    FastAPI endpoint :func:`route` through ``full`` (the app's router), so its errors are
    FastAPI's own, formatted by the app's handlers. Errors raised by :func:`_answer` reach the
    same handlers (this route sits inside the app's exception middleware).

    Why: the request parsing, dependency solving and response handling FastAPI does for an
    endpoint cost more than the decision and its recording (profiled with py-spy under
    ``bench/route.py``'s load: about 60 us of the request's CPU on this machine).
    """

    def __init__(self, full: ASGIApp) -> None:
        super().__init__("/v1/route", self._handle, methods=["POST"], include_in_schema=False)
        self._full = full

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_FULL_PATH) or scope.get("method") != "POST":
            return Match.NONE, {}
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        body = None
        if _is_json(scope):
            try:
                body = RouteRequest.model_validate_json(raw)
            except ValidationError:
                body = None
        if body is None:
            await self._full({**scope, _FULL_PATH: True}, _replay(raw, receive), send)
            return
        payload = await _answer(Request(scope, receive, send), body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", _JSON),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _is_json(scope: Scope) -> bool:
    """The request says its body is ``application/json`` (parameters allowed)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == _JSON
    return False


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then the client's own messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed


def _request_error(exc: ValidationError, *, single: bool) -> RequestValidationError:
    """The validation errors of the outcome list as a request error (one handler formats every
    422); a single object's errors lose the list index."""
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        errors.append({**err, "loc": ("body", *(loc[1:] if single else loc))})
    return RequestValidationError(errors)


@api.post(
    "/outcomes",
    response_model=OutcomesResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/OutcomeIn"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/OutcomeIn"}},
                        ]
                    }
                }
            },
        }
    },
    dependencies=[Depends(require("outcomes"))],
)
async def outcomes(
    router: RouterDep, payload: Annotated[Any, Body(include_in_schema=False)]
) -> OutcomesResponse:
    """Report one outcome (an object) or many (a list). Idempotent on ``decision_id``."""
    single = isinstance(payload, dict)
    if not single and not isinstance(payload, list):
        raise InvalidInput("body must be an outcome object or a list of them", field="body")
    if not payload:
        raise InvalidInput("give at least one outcome", field="body")
    if not single and len(payload) > MAX_OUTCOMES_PER_REQUEST:
        raise InvalidInput(
            f"at most {MAX_OUTCOMES_PER_REQUEST} outcomes per request; send several requests",
            field="body",
        )
    try:
        items = _outcomes_adapter.validate_python([payload] if single else payload)
    except ValidationError as exc:
        raise _request_error(exc, single=single) from exc
    reports = [
        OutcomeReport(
            decision_id=o.decision_id,
            served_model=o.served_model,
            status=o.status,
            latency_ms=o.latency_ms,
            usage=o.usage,
            input_messages=None
            if o.input_messages is None
            else [m.model_dump(exclude_none=True) for m in o.input_messages],
            output_text=o.output_text,
        )
        for o in items
    ]
    results = await router.record_outcomes(
        reports, labels=[""] if single else [f"[{i}]" for i in range(len(reports))]
    )
    out = [OutcomeResultOut.model_validate(r, from_attributes=True) for r in results]
    stored = sum(r.stored for r in results)
    return OutcomesResponse(stored=stored, duplicates=len(results) - stored, results=out)


@api.get("/routing-table", response_model=RoutingTableOut, dependencies=READ)
async def routing_table(router: RouterDep) -> RoutingTableOut:
    """The routing table as the serving snapshot sees it, and the unknown task types this
    process has seen (``unknown_task_types``: routed as ``default`` or refused, by the
    policy's setting of that name)."""
    snap = router.snapshot
    unknown = router.unknown_task_types
    return RoutingTableOut(
        table_version=snap.version,
        policy=snap.policy.name,
        premium_model=snap.policy.spec.premium_model,
        entries=[
            RoutingEntryOut(
                task_class=e.task_class,
                tier=e.tier,
                model=e.model,
                provider=snap.provider_of(e.model),
                status=e.status,
                version=e.version,
                changed_at=e.changed_at.isoformat(),
            )
            for e in sorted(snap.entries.values(), key=lambda e: e.task_class)
        ],
        unknown_task_types=UnknownTaskTypesOut(
            policy=snap.policy.spec.unknown_task_types,
            routed_as_default=unknown.total("default"),
            rejected=unknown.total("reject"),
            task_types=[
                UnknownTaskTypeOut(task_type=c.task_type, action=c.action, count=c.count)
                for c in unknown.counts()
            ],
        ),
    )
