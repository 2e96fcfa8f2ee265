"""The scheduled escalation job: advance every class's rule, apply its decisions, exactly once
per tick across workers (advisory lock, ``job_run`` tick row, unique evidence window)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.escalation._repository import (
    claim_tick,
    record_tick_result,
    rule_states,
    save_state,
)
from evaluator.escalation._state import ClassState, all_states, apply_change
from router.db import utcnow
from router.dialect import advisory_lock, try_advisory_lock
from router.policy import Policy
from router.table import latest_policy

log = logging.getLogger(__name__)

JOB = "escalation"
JOB_ACTOR = "escalation-job"


@dataclass
class EscalationRun:
    """What one escalation run did. ``skipped``: another worker holds the lock, or this tick
    already ran (``duplicate``); ``escalated``/``returned``/``settled``: classes moved up, back
    down to probation, and out of probation; ``blocked``: the rule said escalate but the class's
    judge is not calibrated; ``at_top``: nothing stronger on the ladder."""

    skipped: bool = False
    duplicate: bool = False
    escalated: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    at_top: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "escalated": self.escalated,
            "returned": self.returned,
            "settled": self.settled,
            "blocked": self.blocked,
            "at_top": self.at_top,
        }


Move = tuple[str, str, Literal["escalated", "returned", "settled"]]


def _plan(policy: Policy, cs: ClassState, now: datetime, run: EscalationRun) -> Move | None:
    """(model, status, kind) the class moves to, or None."""
    if cs.status == "pinned":
        return None
    action = cs.decision.action
    if action == "escalate":
        if cs.blocked is not None:
            run.blocked.append(cs.task_class)
            return None
        to_top = policy.settings_for(cs.task_class).escalate_to == "top"
        target = policy.next_model(cs.model)
        if to_top and target is not None:
            target = policy.top_model()
        if target is None:
            run.at_top.append(cs.task_class)
            return None
        return target, "escalated", "escalated"
    if action == "deescalate" and cs.cheaper is not None:
        return cs.cheaper, "probation", "returned"
    probation = timedelta(hours=cs.params.window_hours * cs.params.deescalate_windows)
    if cs.status == "probation" and now - cs.window_start >= probation:
        status = "baseline" if cs.model == cs.base_model else "escalated"
        return cs.model, status, "settled"
    return None


async def run_escalation(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tick: datetime | None = None,
    worker: str = "",
    now: datetime | None = None,
) -> EscalationRun:
    """Advance every class's rule state and apply the decisions, in one transaction.

    ``tick`` (scheduled runs): the run is recorded in ``job_run`` and skipped when the tick
    already ran; while another run holds the lock it waits for it, so a run of an earlier tick
    that is still going never costs this tick its run. Without ``tick`` (the replay driver,
    tests) a run that finds the lock taken is skipped.
    """
    run = EscalationRun()
    async with sessions() as session:
        if not await try_advisory_lock(session, JOB):
            if tick is None:
                run.skipped = True
                return run
            # Another run holds the lock: maybe this tick's in another worker, maybe an earlier
            # tick's (a late catch-up). Wait for it, then the tick row says whether this one ran.
            await advisory_lock(session, JOB)
        if tick is not None and not await claim_tick(session, JOB, tick, worker):
            await session.rollback()
            run.skipped = run.duplicate = True
            return run
        policy = await latest_policy(session)
        if policy is None:
            await session.commit()
            return run
        now = now or utcnow()
        stored = await rule_states(session)
        try:
            for cs in await all_states(session, policy, now):
                row = await save_state(
                    session,
                    stored.get(cs.task_class),
                    cs.task_class,
                    cs.model,
                    cs.window_start,
                    cs.state,
                    cs.decision.action,
                    cs.decision.reason,
                    cs.counts,
                )
                move = _plan(policy, cs, now, run)
                if move is None:
                    continue
                model, status, kind = move
                reason = (
                    cs.decision.reason
                    if kind != "settled"
                    else (
                        f"probation passed: no escalation in {cs.params.deescalate_windows} "
                        f"windows of {cs.params.window_hours:g} h; {cs.decision.reason}"
                    )
                )
                await apply_change(
                    session,
                    cs,
                    model=model,
                    status=status,
                    actor=JOB_ACTOR,
                    reason=reason,
                    rule=cs.decision.rule,
                    stored=row,
                )
                getattr(run, kind).append(cs.task_class)
                log.info(
                    "%s %s: %s -> %s (%s): %s",
                    kind,
                    cs.task_class,
                    cs.model,
                    model,
                    status,
                    cs.decision.reason,
                )
            if tick is not None:
                await record_tick_result(session, JOB, tick, run.summary())
            await session.commit()
        except IntegrityError:
            # Another run wrote an event for one of these (class, window)s: nothing of this
            # run is kept; the next run starts from what that one committed.
            await session.rollback()
            log.warning("escalation run rolled back: a concurrent run already changed a class")
            return EscalationRun(skipped=True, duplicate=True)
    return run
