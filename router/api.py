"""HTTP endpoints of the data plane: route, outcomes, routing table; each needs an API key's
scope once keys exist (:func:`router.keys.require`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from router.errors import InvalidInput
from router.keys import require
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
)
from router.service import Router
from router.tokens import estimate_message_tokens

api = APIRouter(prefix="/v1", tags=["router"])

_outcomes_adapter: TypeAdapter[list[OutcomeIn]] = TypeAdapter(list[OutcomeIn])


def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


RouterDep = Annotated[Router, Depends(get_router)]
RouteCaller = Annotated[str | None, Depends(require("route"))]
READ = [Depends(require("read-samples"))]


@api.post("/route", response_model=RouteResponse)
async def route(body: RouteRequest, router: RouterDep, caller: RouteCaller) -> RouteResponse:
    """Which model for this request? Answered from the in-memory routing snapshot; the
    decision records the caller's API key id (scope ``route``). While the database is
    unreachable the decision is spooled to disk before the answer; 503 with ``Retry-After``
    when the spool is full."""
    if body.input_tokens is not None:
        tokens = body.input_tokens
    elif body.messages is not None:
        tokens = estimate_message_tokens(m.model_dump() for m in body.messages)
    else:
        raise InvalidInput("input_tokens: give input_tokens or messages", field="input_tokens")
    d = router.route(
        body.task_type,
        tokens,
        body.has_tool_calls,
        body.metadata,
        request_id=body.request_id,
        item_id=body.item_id,
        caller=caller,
    )
    await router.writer.durable()  # no wait unless spooling: then until it is on disk
    return RouteResponse.model_validate(d, from_attributes=True)


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
    """The routing table as the serving snapshot sees it."""
    snap = router.snapshot
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
    )
