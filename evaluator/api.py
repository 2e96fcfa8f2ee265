"""HTTP endpoints of the control plane: per-class quality with the escalation rule's state, the
escalation history, the cost views, and the operators' changes (pin, unpin, override)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import SecretStr
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.compression import compression_books
from evaluator.costs import costs as cost_view
from evaluator.costs import parse_group_by, parse_range
from evaluator.escalation import ClassState, class_state, override_class, pin_class, unpin_class
from evaluator.evidence import MAX_LIMIT, escalation_evidence
from evaluator.models import EscalationEvent
from evaluator.schemas import (
    CompressionBooksOut,
    CostsOut,
    EscalationOut,
    EvidenceOut,
    EvidenceSampleOut,
    ManualChangeIn,
    OverrideIn,
    QualityOut,
)
from router.errors import Forbidden, Unauthorized
from router.keys import bearer_token, keyring_of, presented_key, require
from router.schemas import PRINTABLE_PATTERN

api = APIRouter(prefix="/v1", tags=["evaluator"])

ClassPath = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE_PATTERN)]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]


async def require_operator(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """Operator calls (pin, unpin, override) need ``Authorization: Bearer <admin token>`` when
    the service has one (``TIERWISE_ADMIN_TOKEN``, passed in by the app factory as
    ``app.state.admin_token``; only as a bearer token), or an API key with the scope
    ``admin`` once any key exists (:mod:`router.keys`). With neither, they are open. Sets
    ``request.state.caller`` (the key's id; None for the admin token or when open).

    Raises:
        Unauthorized: a token or keys are configured and the request has neither a matching
            token nor a live key, or its ``Authorization`` is not ``Bearer <token>`` (401).
        Forbidden: a live key without the scope ``admin`` (403).
    """
    request.state.caller = None
    token: SecretStr | None = getattr(request.app.state, "admin_token", None)
    ring = keyring_of(request)
    if token is not None:
        given = bearer_token(authorization) or ""
        if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return
        if ring.open:
            raise Unauthorized(
                "operator calls need Authorization: Bearer <admin token>", field="authorization"
            )
    if ring.open:
        return
    request.state.caller = ring.authenticate(presented_key(authorization, x_api_key), "admin")


OPERATOR = [Depends(require_operator)]
READ = [Depends(require("read-samples"))]


def _quality(s: ClassState) -> QualityOut:
    est, run = s.decision.estimate, s.decision.run
    return QualityOut(
        task_class=s.task_class,
        model=s.model,
        status=s.status,
        window_start=s.window_start,
        n_graded=est.n,
        n_disagree=est.k,
        n_invalid=s.invalid,
        disagreement_rate=est.rate,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        confidence=est.confidence,
        rule=s.decision.rule,
        rule_action=s.decision.action,
        reason=s.decision.reason,
        statistic=s.decision.statistic,
        decision_limit=s.decision.limit,
        sprt=s.state.w if s.state.live else None,
        run_n=run.n,
        run_k=run.k,
        run_ci_low=run.ci_low,
        run_ci_high=run.ci_high,
        blocked=s.blocked,
        rule_state=s.state.to_dict(),
    )


@api.get("/classes/{task_class}/quality", response_model=QualityOut, dependencies=READ)
async def class_quality(task_class: ClassPath, session: SessionDep) -> QualityOut:
    """Disagreement rate of ``task_class`` on its current model since its last change, its
    Wilson interval, and the escalation rule's state and reason (including verdicts graded
    since the last escalation run; nothing is written).

    404 when the class is neither in the routing table nor ever routed.
    """
    return _quality(await class_state(session, task_class))


@api.get("/escalations", response_model=list[EscalationOut], dependencies=READ)
async def escalations(
    session: SessionDep,
    task_class: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EscalationOut]:
    """Escalation events (automatic and manual), newest first, optionally for one class."""
    stmt = select(EscalationEvent).order_by(col(EscalationEvent.id).desc()).limit(limit)
    if task_class is not None:
        stmt = stmt.where(EscalationEvent.task_class == task_class)
    rows = (await session.exec(stmt)).all()
    return [EscalationOut.model_validate(r, from_attributes=True) for r in rows]


@api.get("/compression", response_model=CompressionBooksOut, dependencies=READ)
async def compression(
    session: SessionDep,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Prompt compression per class over ``[since, until)`` (UTC ISO dates or datetimes): its
    quality-guard level and ratio, calls compressed and sent whole by the extraction guard,
    context tokens and USD saved, the guard's graded probes with the disagreement rate and its
    Wilson interval, the guard's own spend; and the latest level changes with their evidence
    (:func:`evaluator.compression.compression_books`). 422 naming the field for a bad date."""
    start, end = parse_range(since, until)
    return await compression_books(session, since=start, until=end)


async def text_reader(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> bool:
    """Who may see the evidence behind an escalation: a key with ``read-samples`` sees it with
    its text (True), one with only ``admin`` without (False); open mode sees everything. Sets
    ``request.state.caller``.

    Raises:
        Unauthorized: keys exist and the request has no live one (401).
        Forbidden: a live key with neither scope (403).
    """
    ring = keyring_of(request)
    key = presented_key(authorization, x_api_key)
    try:
        request.state.caller = ring.authenticate(key, "read-samples")
        return True
    except Forbidden:
        try:
            request.state.caller = ring.authenticate(key, "admin")
        except Forbidden:
            raise Forbidden(
                "this endpoint needs the scope 'read-samples' (or 'admin', for the evidence "
                "without its text)",
                field="authorization",
            ) from None
        return False


@api.get(
    "/escalations/{event_id}",
    response_model=EvidenceOut,
    responses={404: {"description": "No such event"}},
)
async def escalation_detail(
    event_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    with_text: Annotated[bool, Depends(text_reader)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    verdict: Annotated[str | None, Query(max_length=16)] = None,
) -> EvidenceOut:
    """The samples behind escalation event ``event_id`` (:mod:`evaluator.evidence`): the input,
    the graded answer, the reference's answer or the judge's explanation and score, the
    verdict; ``limit`` a page after ``cursor`` (the previous page's ``next_cursor``), only
    ``verdict`` ones when set. Text only with the scope ``read-samples``; a key with only
    ``admin`` gets the verdicts without it. 404 for an unknown event, 422 naming a bad
    parameter."""
    ev = await escalation_evidence(
        session, event_id, limit=limit, cursor=cursor, verdict=verdict, with_text=with_text
    )
    return EvidenceOut(
        event=EscalationOut.model_validate(ev.event, from_attributes=True),
        counts=ev.counts,
        text_included=ev.text_included,
        samples=[EvidenceSampleOut.model_validate(s, from_attributes=True) for s in ev.samples],
        next_cursor=ev.next_cursor,
    )


@api.get("/costs", response_model=CostsOut, response_model_exclude_unset=True, dependencies=READ)
async def costs(
    session: SessionDep,
    since: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE_PATTERN)] = None,
    until: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE_PATTERN)] = None,
    group_by: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE_PATTERN)] = None,
) -> CostsOut:
    """The cost view (:mod:`evaluator.costs`) over ``[since, until)``: ISO dates or datetimes,
    UTC (a bare ``until`` date includes that day), grouped by ``group_by``
    (``day,task_class,model,tier,caller``, comma-separated): per group requests, tokens, serving
    cost, unpriced count, the counterfactual on the premium model, savings, grading spend and
    shadow probes apart (USD, and exact whole nano-USD as ``*_nusd``), the totals, and per
    class the economics of grading with the break-even sampling rate.

    422 naming the field for an unknown group key, a bad date, or ``since`` after ``until``.
    """
    start, end = parse_range(since, until)
    report = await cost_view(session, since=start, until=end, group_by=parse_group_by(group_by))
    return CostsOut.model_validate(report.to_dict())


async def _done(session: AsyncSession, event: EscalationEvent) -> EscalationOut:
    await session.commit()
    return EscalationOut.model_validate(event, from_attributes=True)


@api.post(
    "/classes/{task_class}/pin",
    response_model=EscalationOut,
    responses={409: {"description": "Already pinned"}},
    dependencies=OPERATOR,
)
async def pin(task_class: ClassPath, body: ManualChangeIn, session: SessionDep) -> EscalationOut:
    """Freeze ``task_class`` on its current model: it is no longer sampled, and the escalation
    job never changes it. Recorded as an escalation event (actor, reason, evidence)."""
    event = await pin_class(session, task_class, actor=body.actor, reason=body.reason)
    return await _done(session, event)


@api.post(
    "/classes/{task_class}/unpin",
    response_model=EscalationOut,
    responses={409: {"description": "Not pinned"}},
    dependencies=OPERATOR,
)
async def unpin(task_class: ClassPath, body: ManualChangeIn, session: SessionDep) -> EscalationOut:
    """Hand ``task_class`` back to the escalation job on its current model (``baseline`` on the
    policy's model, else ``escalated``), with a fresh rule state."""
    event = await unpin_class(session, task_class, actor=body.actor, reason=body.reason)
    return await _done(session, event)


@api.post(
    "/classes/{task_class}/override",
    response_model=EscalationOut,
    responses={409: {"description": "The class is already there"}},
    dependencies=OPERATOR,
)
async def override(task_class: ClassPath, body: OverrideIn, session: SessionDep) -> EscalationOut:
    """Move ``task_class`` to ``model`` (any catalog model, up or down); with ``pin`` it stays
    there, else the job keeps watching it. 404 for an unknown class or model."""
    event = await override_class(
        session, task_class, model=body.model, actor=body.actor, reason=body.reason, pin=body.pin
    )
    return await _done(session, event)
