"""Grading: turn queued samples into grades with the class's grader and reference model.

:func:`grade_pending` is a plain async function over a session factory, so the scheduler, the
replay driver and the tests run the very same code. On PostgreSQL, samples are claimed with
``FOR UPDATE SKIP LOCKED`` and a lease (a crashed worker's claims return to the pool when the
lease runs out); the write-back only touches rows still holding the lease.

Shadow probes (the way back of an escalated class, docs/escalation.md): a sample of an
``escalated`` class is graded as a *shadow* sample (:func:`shadow_model`): the grading job asks
the next cheaper model on the ladder for its answer to the sample's input messages, grades that
answer with the class's grader against the class's reference model, and stores the grade with
``model`` = the cheaper model and ``shadow`` = true. Those grades are the only evidence the way
back reads (:func:`evaluator.escalation.window_counts` with ``shadow=True``).
"""

from __future__ import annotations

from evaluator.grading._budget import waiting_on_budget
from evaluator.grading._job import SHADOW_MAX_TOKENS, GradingRun, grade_pending
from evaluator.grading._probes import SHADOW_FRACTION, SHADOW_SALT, shadow_model
from evaluator.grading._queue import (
    MAX_CLAIMS,
    MAX_TRANSIENT_FAILURES,
    TRANSIENT_BACKOFF_S,
    claim_samples,
)

__all__ = [
    "MAX_CLAIMS",
    "MAX_TRANSIENT_FAILURES",
    "SHADOW_FRACTION",
    "SHADOW_MAX_TOKENS",
    "SHADOW_SALT",
    "TRANSIENT_BACKOFF_S",
    "GradingRun",
    "claim_samples",
    "grade_pending",
    "shadow_model",
    "waiting_on_budget",
]
