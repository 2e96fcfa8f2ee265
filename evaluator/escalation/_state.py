"""What the rule says about each class: its evidence window, the verdicts since, the rule's
decision, and the event a change records (read-only; the job and the operators act on it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.calibration import may_escalate
from evaluator.escalation._repository import (
    SETTLE,
    graded_counts,
    routed_classes,
    rule_states,
    save_state,
    settled_window_counts,
    table_entries,
)
from evaluator.models import EscalationEvent, RuleStateRow
from evaluator.sequential import RuleState, SequentialDecision, SequentialParams, step
from router.db import utcnow
from router.errors import NotFound
from router.jobs import EPOCH
from router.models import RoutingEntry
from router.policy import ClassSettings, Policy
from router.table import change_class, latest_policy


def rule_params(settings: ClassSettings) -> SequentialParams:
    """The rule's parameters from a class's policy settings."""
    return SequentialParams(
        p0=settings.p0,
        p1=settings.p1,
        alpha=settings.alpha,
        beta=settings.beta,
        arl0_days=settings.arl0_days,
        decision_limit=settings.decision_limit,
        half_life_days=settings.half_life_days,
        min_samples=settings.min_samples,
        lower_level=settings.lower_level,
        deescalate_windows=settings.deescalate_windows,
        window_hours=settings.window_hours,
        threshold=settings.threshold,
        confidence=settings.confidence,
    )


@dataclass(frozen=True, slots=True)
class ClassState:
    """A class's evidence window and what the rule says about it.

    ``state`` is the rule state after the pending verdicts; ``cheaper`` the next cheaper model
    whose shadow verdicts can bring an escalated class back; ``base_model`` the model the
    policy gives the class; ``blocked`` why the class may not be escalated (None: it may);
    ``counts`` the settled-counts cache the job stores with the state
    (:func:`evaluator.escalation._repository.settled_window_counts`).
    """

    task_class: str
    model: str
    status: str
    window_start: datetime
    decision: SequentialDecision
    invalid: int
    state: RuleState
    params: SequentialParams
    cheaper: str | None
    base_model: str
    blocked: str | None
    counts: dict[str, Any] | None = None


async def evaluate(
    session: AsyncSession,
    policy: Policy,
    task_class: str,
    entry: RoutingEntry | None,
    stored: RuleStateRow | None,
    now: datetime,
) -> ClassState:
    if entry is not None:
        model, status, since = entry.model, entry.status, entry.changed_at
        base_model = policy.model_for_tier(entry.tier)
    else:
        base_model = policy.model_for_tier(policy.match(task_class, 0, False).tier)
        model, status, since = base_model, "baseline", EPOCH
    settings = policy.settings_for(task_class)
    params = rule_params(settings)
    state = RuleState.fresh(since)
    if stored is not None and stored.model == model and stored.window_start == since:
        state = RuleState.from_dict(stored.state)
    cache = (stored.counts if stored is not None else None) or {}
    horizon = utcnow() - SETTLE  # the real clock: grade rows are written at it
    counts, own = await settled_window_counts(
        session, task_class, model, since, shadow=False, settled=cache.get("own"), horizon=horizon
    )
    n, k = graded_counts(counts)
    if n < state.n or k < state.k:  # grades were removed: start the window again
        state = RuleState.fresh(since)
    cheaper = policy.previous_model(model) if status == "escalated" else None
    sn = sk = 0
    shadow_cache: dict[str, Any] | None = None
    if cheaper is not None:
        shadow, shadow_cache = await settled_window_counts(
            session,
            task_class,
            cheaper,
            since,
            shadow=True,
            settled=cache.get("shadow"),
            horizon=horizon,
        )
        sn, sk = graded_counts(shadow)
        sn, sk = max(sn - state.dn, 0), max(sk - state.dk, 0)
    new, decision = step(
        state, n - state.n, k - state.k, now, params, shadow_n=sn, shadow_k=min(sk, sn)
    )
    reference = policy.reference_model(task_class)
    if model == reference and status != "escalated" and new.n == 0:
        decision = replace(
            decision,
            action="on_reference",
            reason=f"on its reference model {model}: not sampled (nothing to compare it with); "
            "the class is measured again when it moves to a cheaper model",
        )
    allowed, why = may_escalate(settings, reference)
    blocked = None if allowed else why
    if blocked is not None and decision.action == "escalate":
        decision = replace(decision, reason=f"{decision.reason}; not moved: {why}")
    invalid = counts.get("invalid", 0) + counts.get("refused", 0)
    return ClassState(
        task_class,
        model,
        status,
        since,
        decision,
        invalid,
        new,
        params,
        cheaper,
        base_model,
        blocked,
        {"own": own, "shadow": shadow_cache},
    )


async def all_states(
    session: AsyncSession, policy: Policy, now: datetime, only: str | None = None
) -> list[ClassState]:
    entries = await table_entries(session, only)
    stored = await rule_states(session, only)
    routed = await routed_classes(session, only)
    return [
        await evaluate(session, policy, c, entries.get(c), stored.get(c), now)
        for c in sorted(set(entries) | routed)
    ]


async def class_states(session: AsyncSession, *, now: datetime | None = None) -> list[ClassState]:
    """Every class in the routing table or the class registry (every class ever routed) with
    its window and the rule's decision (read-only)."""
    policy = await latest_policy(session)
    if policy is None:
        return []
    return await all_states(session, policy, now or utcnow())


async def class_state(
    session: AsyncSession, task_class: str, *, now: datetime | None = None
) -> ClassState:
    """One class's state (read-only).

    Raises:
        NotFound: no policy applied, or the class is neither in the table nor ever routed.
    """
    policy = await latest_policy(session)
    if policy is None:
        raise NotFound("no routing policy has been applied", field="policy")
    states = await all_states(session, policy, now or utcnow(), only=task_class)
    if not states:
        raise NotFound(f"task class '{task_class}' is not known", field="task_class")
    return states[0]


def evidence_of(cs: ClassState) -> dict[str, Any]:
    """What an escalation event stores as evidence: the rule state, statistic and limit, the
    CUSUM run's k/n and Wilson interval, and the shadow verdicts of the cheaper model."""
    run = cs.decision.run
    return {
        "state": cs.state.to_dict(),
        "statistic": cs.decision.statistic,
        "limit": cs.decision.limit,
        "action": cs.decision.action,
        "run": {
            "n": run.n,
            "k": run.k,
            "rate": run.rate,
            "ci_low": run.ci_low,
            "ci_high": run.ci_high,
        },
        "shadow": {
            "model": cs.cheaper,
            "n": cs.state.dn,
            "k": cs.state.dk,
            "windows_below": cs.state.below,
        },
    }


def event_of(
    cs: ClassState,
    *,
    to_model: str,
    to_status: str,
    actor: str,
    reason: str,
    rule: str,
    version: int,
    threshold: float,
) -> EscalationEvent:
    est = cs.decision.estimate
    return EscalationEvent(
        task_class=cs.task_class,
        from_model=cs.model,
        to_model=to_model,
        from_status=cs.status,
        to_status=to_status,
        actor=actor[:64],
        reason=reason,
        rule=rule[:200],
        n=est.n,
        k=est.k,
        rate=est.rate,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        threshold=threshold,
        confidence=cs.params.confidence,
        table_version=version,
        window_start=cs.window_start,
        evidence=evidence_of(cs),
    )


async def apply_change(
    session: AsyncSession,
    cs: ClassState,
    *,
    model: str,
    status: str,
    actor: str,
    reason: str,
    rule: str,
    stored: RuleStateRow | None,
) -> EscalationEvent:
    """Change the class, record the event, and start the rule afresh for the new window."""
    _, after = await change_class(session, cs.task_class, model=model, status=status)
    event = event_of(
        cs,
        to_model=model,
        to_status=status,
        actor=actor,
        reason=reason,
        rule=rule,
        version=after.version,
        threshold=cs.params.threshold,
    )
    session.add(event)
    await save_state(
        session,
        stored,
        cs.task_class,
        model,
        after.changed_at,
        RuleState.fresh(after.changed_at),
        "too_few",
        f"started by: {reason}",
    )
    await session.flush()
    return event
