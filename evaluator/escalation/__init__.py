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

Exactly once (docs/field-cases.md): each run takes a transaction-level advisory lock on
PostgreSQL (``pg_try_advisory_xact_lock``; a second worker skips), records its tick in
``job_run`` (unique per job and tick: one run per tick however many workers fire), and every
event is unique per (class, window start, new status), so even a run that got past both cannot
write a second escalation for the same class and window; it rolls back whole. The rule state
stores the cumulative counts it has consumed, so a verdict is added to the statistic once even
when grades commit late or a run is repeated.
"""

from __future__ import annotations

from evaluator.escalation._job import JOB, JOB_ACTOR, EscalationRun, run_escalation
from evaluator.escalation._operators import override_class, pin_class, unpin_class
from evaluator.escalation._repository import window_counts
from evaluator.escalation._state import (
    ClassState,
    class_state,
    class_states,
    evidence_of,
    rule_params,
)

__all__ = [
    "JOB",
    "JOB_ACTOR",
    "ClassState",
    "EscalationRun",
    "class_state",
    "class_states",
    "evidence_of",
    "override_class",
    "pin_class",
    "rule_params",
    "run_escalation",
    "unpin_class",
    "window_counts",
]
