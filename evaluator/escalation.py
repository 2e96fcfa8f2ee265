"""Escalation: the sequential rule (:mod:`evaluator.sequential`) applied to every task class, on
a schedule, exactly once, and the operators' manual changes.

- :func:`class_states`: every routed or graded class, its evidence window (since its last
  change), and what the rule says after the verdicts graded since its state was saved.
  Read-only: the API and the reports show it.
- :func:`run_escalation`: the scheduled job. It advances and saves every class's rule state and
  applies the decisions: one step up the policy's ``ladder`` on ``escalate`` (or to the top
  with ``escalate_to = "top"``); one step down to ``probation`` on ``deescalate`` (shadow
  probes of the cheaper model cleared the way back); ``probation`` -> ``baseline`` after
  ``deescalate_windows`` windows without a new escalation. Pinned classes are never changed.
  A class whose judge is not calibrated (:func:`evaluator.calibration.may_escalate`) is
  evaluated and shown, never moved.
- :func:`pin_class`, :func:`unpin_class`, :func:`override_class`: operator changes.

Every change, automatic or manual, bumps the table version (:func:`router.table.change_class`)
and writes an :class:`~evaluator.models.EscalationEvent` with actor, reason and evidence (the
window's k/n with its Wilson interval, the rule and its state).

Exactly once (field cases S1, S2): each run takes a transaction-level advisory lock on
PostgreSQL (``pg_try_advisory_xact_lock``; a second worker skips), records its tick in
``job_run`` (unique per job and tick: one run per tick however many workers fire), and every
event is unique per (class, window start, new status), so even a run that got past both cannot
write a second escalation for the same class and window; it rolls back whole. The rule state
stores the cumulative counts it has consumed, so a verdict is added to the statistic once even
when grades commit late or a run is repeated.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.calibration import may_escalate
from evaluator.models import EscalationEvent, Grade, JobRun, RuleStateRow
from evaluator.sequential import RuleState, SequentialDecision, SequentialParams, step
from router.db import dialect_of, utcnow
from router.errors import Conflict, NotFound
from router.models import Decision, RoutingEntry
from router.policy import ClassSettings, Policy
from router.table import change_class, latest_policy

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JOB = "escalation"
JOB_ACTOR = "escalation-job"


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


# ---- locks and ticks ---------------------------------------------------------------------------


def _advisory_key(name: str) -> int:
    return zlib.crc32(f"tierwise:{name}".encode())


async def try_job_lock(session: AsyncSession, name: str) -> bool:
    """Take the job's transaction-level advisory lock on PostgreSQL without waiting; True on
    SQLite (there the ``job_run`` row and SQLite's single writer serialise runs)."""
    if dialect_of(session) != "postgresql":
        return True
    conn = await session.connection()
    got = await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_advisory_key(name))))
    return bool(got.scalar_one())


async def wait_job_lock(session: AsyncSession, name: str) -> None:
    """Take the job's transaction-level advisory lock on PostgreSQL, waiting for a running job
    (an operator's change is never lost to a concurrent run); no-op on SQLite."""
    if dialect_of(session) == "postgresql":
        conn = await session.connection()
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_advisory_key(name))))


def tick_of(at: datetime, interval_s: float) -> datetime:
    """The start of the UTC interval holding ``at``: intervals are aligned to the epoch, so
    every worker computes the same tick (an hourly job ticks at the top of each hour)."""
    seconds = (at - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=(seconds // interval_s) * interval_s)


async def claim_tick(session: AsyncSession, job: str, tick: datetime, worker: str) -> bool:
    """Insert this run's ``job_run`` row; False when the tick already has one (another worker
    ran it). The row commits or rolls back with the run."""
    values = {"job": job, "tick": tick, "worker": worker[:128], "started_at": utcnow()}
    stmt: sa.Insert
    if dialect_of(session) == "postgresql":
        stmt = postgresql.insert(JobRun).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(JobRun).values(**values).on_conflict_do_nothing()
    conn = await session.connection()
    result = await conn.execute(stmt)
    return bool(result.rowcount == 1)


# ---- class states ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassState:
    """A class's evidence window and what the rule says about it.

    ``state`` is the rule state after the pending verdicts; ``cheaper`` the next cheaper model
    whose shadow verdicts can bring an escalated class back; ``base_model`` the model the
    policy gives the class; ``blocked`` why the class may not be escalated (None: it may).
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


async def window_counts(
    session: AsyncSession,
    task_class: str,
    model: str,
    since: datetime,
    *,
    shadow: bool = False,
) -> dict[str, int]:
    """Verdict counts ``{verdict: count}`` for ``task_class`` on ``model`` over samples decided
    at or after ``since``: the served model's own grades, or with ``shadow`` only the shadow
    probes (grades of ``model``'s answers obtained by the grading job for an escalated class,
    ``Grade.shadow``). The two never mix."""
    rows = await session.exec(
        select(Grade.verdict, func.count())
        .where(
            col(Grade.task_class) == task_class,
            col(Grade.model) == model,
            col(Grade.decided_at) >= since,
            col(Grade.shadow) == shadow,
        )
        .group_by(col(Grade.verdict))
    )
    return {verdict: int(count) for verdict, count in rows.all()}


def _graded(counts: dict[str, int]) -> tuple[int, int]:
    return counts.get("agree", 0) + counts.get("disagree", 0), counts.get("disagree", 0)


async def _evaluate(
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
    counts = await window_counts(session, task_class, model, since)
    n, k = _graded(counts)
    if n < state.n or k < state.k:  # grades were removed: start the window again
        state = RuleState.fresh(since)
    cheaper = policy.previous_model(model) if status == "escalated" else None
    sn = sk = 0
    if cheaper is not None:
        sn, sk = _graded(await window_counts(session, task_class, cheaper, since, shadow=True))
        sn, sk = max(sn - state.dn, 0), max(sk - state.dk, 0)
    new, decision = step(
        state, n - state.n, k - state.k, now, params, shadow_n=sn, shadow_k=min(sk, sn)
    )
    allowed, why = may_escalate(settings)
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
    )


async def _all_states(
    session: AsyncSession, policy: Policy, now: datetime, only: str | None = None
) -> list[ClassState]:
    entry_q = select(RoutingEntry)
    stored_q = select(RuleStateRow)
    if only is not None:
        entry_q = entry_q.where(col(RoutingEntry.task_class) == only)
        stored_q = stored_q.where(col(RuleStateRow.task_class) == only)
    entries = {e.task_class: e for e in (await session.exec(entry_q)).all()}
    stored = {r.task_class: r for r in (await session.exec(stored_q)).all()}
    if only is None:
        routed = set((await session.exec(select(Decision.task_class).distinct())).all())
    else:
        seen = await session.exec(
            select(Decision.task_class).where(col(Decision.task_class) == only).limit(1)
        )
        routed = set(seen.all())
    return [
        await _evaluate(session, policy, c, entries.get(c), stored.get(c), now)
        for c in sorted(set(entries) | routed)
    ]


async def class_states(session: AsyncSession, *, now: datetime | None = None) -> list[ClassState]:
    """Every routed or graded class with its window and the rule's decision (read-only)."""
    policy = await latest_policy(session)
    if policy is None:
        return []
    return await _all_states(session, policy, now or utcnow())


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
    states = await _all_states(session, policy, now or utcnow(), only=task_class)
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


async def _save_state(
    session: AsyncSession,
    row: RuleStateRow | None,
    task_class: str,
    model: str,
    window_start: datetime,
    state: RuleState,
    action: str,
    reason: str,
) -> RuleStateRow:
    if row is None:
        row = RuleStateRow(
            task_class=task_class,
            model=model,
            window_start=window_start,
            state=state.to_dict(),
            action=action,
            reason=reason,
        )
        session.add(row)
    else:
        row.model, row.window_start, row.state = model, window_start, state.to_dict()
        row.action, row.reason, row.updated_at = action, reason, utcnow()
    return row


def _event(
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


async def _apply(
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
    event = _event(
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
    await _save_state(
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


# ---- the job -----------------------------------------------------------------------------------


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
    already ran. Without it (the replay driver, tests) every call runs.
    """
    run = EscalationRun()
    async with sessions() as session:
        if not await try_job_lock(session, JOB):
            run.skipped = True
            return run
        if tick is not None and not await claim_tick(session, JOB, tick, worker):
            await session.rollback()
            run.skipped = run.duplicate = True
            return run
        policy = await latest_policy(session)
        if policy is None:
            await session.commit()
            return run
        now = now or utcnow()
        stored = {r.task_class: r for r in (await session.exec(select(RuleStateRow))).all()}
        try:
            for cs in await _all_states(session, policy, now):
                row = await _save_state(
                    session,
                    stored.get(cs.task_class),
                    cs.task_class,
                    cs.model,
                    cs.window_start,
                    cs.state,
                    cs.decision.action,
                    cs.decision.reason,
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
                await _apply(
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
                await session.exec(
                    sa.update(JobRun)
                    .where(col(JobRun.job) == JOB, col(JobRun.tick) == tick)
                    .values(result=run.summary())
                )
            await session.commit()
        except IntegrityError:
            # Another run wrote an event for one of these (class, window)s: nothing of this
            # run is kept; the next run starts from what that one committed.
            await session.rollback()
            log.warning("escalation run rolled back: a concurrent run already changed a class")
            return EscalationRun(skipped=True, duplicate=True)
    return run


# ---- operators ---------------------------------------------------------------------------------


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
    await wait_job_lock(session, JOB)
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
    return await _apply(
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
