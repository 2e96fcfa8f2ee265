"""Operators' changes to a class: pin, unpin, override. Each waits for a running escalation job
(the advisory lock), records an event like the job's, and restarts the rule. Functions flush; the
request commits."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation._job import JOB
from evaluator.escalation._state import apply_change, class_state
from evaluator.models import EscalationEvent, RuleStateRow
from router.dialect import advisory_lock
from router.errors import Conflict


async def _manual(
    session: AsyncSession,
    task_class: str,
    *,
    model: str | None,
    status: str | None,
    actor: str,
    reason: str,
    kind: str,
) -> EscalationEvent:
    await advisory_lock(session, JOB)
    cs = await class_state(session, task_class)
    if kind == "pin":
        if cs.status == "pinned":
            raise Conflict(f"task class '{task_class}' is already pinned", field="task_class")
        model, status = cs.model, "pinned"
    elif kind == "unpin":
        if cs.status != "pinned":
            raise Conflict(f"task class '{task_class}' is not pinned", field="task_class")
        model = cs.model
        status = "baseline" if cs.model == cs.base_model else "escalated"
    assert model is not None
    if status is None:
        status = "baseline" if model == cs.base_model else "escalated"
    if (model, status) == (cs.model, cs.status):
        raise Conflict(f"task class '{task_class}' is already on {model} ({status})", field="model")
    stored = await session.get(RuleStateRow, task_class)
    return await apply_change(
        session,
        cs,
        model=model,
        status=status,
        actor=actor,
        reason=reason,
        rule=f"manual {kind}",
        stored=stored,
    )


async def pin_class(
    session: AsyncSession, task_class: str, *, actor: str, reason: str
) -> EscalationEvent:
    """Freeze ``task_class`` on its current model: never sampled, never changed by the job.
    Flushes; the caller commits.

    Raises:
        NotFound: unknown class or no policy. Conflict: already pinned.
    """
    return await _manual(
        session, task_class, model=None, status=None, actor=actor, reason=reason, kind="pin"
    )


async def unpin_class(
    session: AsyncSession, task_class: str, *, actor: str, reason: str
) -> EscalationEvent:
    """Return ``task_class`` to the job's control on its current model (``baseline`` on the
    policy's model, else ``escalated``), with a fresh rule state.

    Raises:
        NotFound: unknown class or no policy. Conflict: not pinned.
    """
    return await _manual(
        session, task_class, model=None, status=None, actor=actor, reason=reason, kind="unpin"
    )


async def override_class(
    session: AsyncSession,
    task_class: str,
    *,
    model: str,
    actor: str,
    reason: str,
    pin: bool = False,
) -> EscalationEvent:
    """Move ``task_class`` to ``model``: pinned there with ``pin``, else ``baseline`` on the
    policy's model and ``escalated`` on any other, under the job's control.

    Raises:
        NotFound: unknown class, unknown model, or no policy. Conflict: nothing would change.
    """
    return await _manual(
        session,
        task_class,
        model=model,
        status="pinned" if pin else None,
        actor=actor,
        reason=reason,
        kind="override",
    )
