"""HTTP endpoints of the control plane: per-class quality and the escalation history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.jobs import class_states
from evaluator.models import EscalationEvent
from evaluator.schemas import EscalationOut, QualityOut
from router.errors import NotFound

api = APIRouter(prefix="/v1", tags=["evaluator"])



async def _session(request: Request):  # type: ignore[no-untyped-def]
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]


@api.get("/classes/{task_class}/quality", response_model=QualityOut)
async def class_quality(task_class: str, session: SessionDep) -> QualityOut:
    """Disagreement rate of ``task_class`` on its current model since its last change.

    404 when the class is neither in the routing table nor ever routed.
    """
    for s in await class_states(session):
        if s.task_class == task_class:
            est = s.decision.estimate
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
            )
    raise NotFound(f"task class '{task_class}' is not known", field="task_class")


@api.get("/escalations", response_model=list[EscalationOut])
async def escalations(
    session: SessionDep,
    task_class: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EscalationOut]:
    """Escalation events, newest first, optionally for one class."""
    stmt = select(EscalationEvent).order_by(col(EscalationEvent.id).desc()).limit(limit)
    if task_class is not None:
        stmt = stmt.where(EscalationEvent.task_class == task_class)
    rows = (await session.exec(stmt)).all()
    return [EscalationOut.model_validate(r, from_attributes=True) for r in rows]
