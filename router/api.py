"""HTTP endpoints of the data plane: route, outcomes, routing table."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import TypeAdapter, ValidationError

from router.errors import InvalidInput
from router.schemas import (
    OutcomeIn,
    OutcomeResultOut,
    OutcomesResponse,
    RouteRequest,
    RouteResponse,
    RoutingEntryOut,
    RoutingTableOut,
)
from router.service import OutcomeReport, Router
from router.tokens import estimate_message_tokens

api = APIRouter(prefix="/v1", tags=["router"])

_outcomes_adapter: TypeAdapter[list[OutcomeIn]] = TypeAdapter(list[OutcomeIn])


def get_router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


RouterDep = Annotated[Router, Depends(get_router)]


@api.post("/route", response_model=RouteResponse)
async def route(body: RouteRequest, router: RouterDep) -> RouteResponse:
    """Which model for this request? Answered from the in-memory routing snapshot."""
    if body.input_tokens is not None:
        tokens = body.input_tokens
    elif body.messages is not None:
        tokens = estimate_message_tokens(m.model_dump() for m in body.messages)
    else:
        raise InvalidInput("input_tokens: give input_tokens or messages", field="input_tokens")
    d = router.route(
        body.task_type, tokens, body.has_tool_calls, body.metadata, decision_id=body.request_id
    )
    return RouteResponse(
        decision_id=d.decision_id,
        task_class=d.task_class,
        tier=d.tier,
        model=d.model,
        provider=d.provider,
        table_version=d.table_version,
        sampled=d.sampled,
        reason=d.reason,
        input_tokens=tokens,
    )


def _validation_error(exc: ValidationError, *, single: bool) -> InvalidInput:
    """First error of a list validation, named ``field`` (single) or ``[i].field`` (list)."""
    err = exc.errors()[0]
    index, *rest = err["loc"] or ("",)
    tail = ".".join(str(p) for p in rest)
    field = tail if single else f"[{index}]" + (f".{tail}" if tail else "")
    return InvalidInput(f"{field or 'body'}: {err['msg']}", field=field or "body")


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
)
async def outcomes(
    router: RouterDep, payload: Annotated[Any, Body(include_in_schema=False)]
) -> OutcomesResponse:
    """Report one outcome (an object) or many (a list). Idempotent on ``decision_id``."""
    single = isinstance(payload, dict)
    if not single and not isinstance(payload, list):
        raise InvalidInput("body must be an outcome object or a list of them", field="body")
    try:
        items = _outcomes_adapter.validate_python([payload] if single else payload)
    except ValidationError as exc:
        raise _validation_error(exc, single=single) from exc
    if not items:
        raise InvalidInput("give at least one outcome", field="body")
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
    results = await router.record_outcomes(reports)
    out = [
        OutcomeResultOut(
            decision_id=r.decision_id,
            stored=r.stored,
            cost_usd=r.cost_usd,
            sample_queued=r.sample_queued,
            note=r.note,
        )
        for r in results
    ]
    stored = sum(r.stored for r in results)
    return OutcomesResponse(stored=stored, duplicates=len(results) - stored, results=out)


@api.get("/routing-table", response_model=RoutingTableOut)
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
