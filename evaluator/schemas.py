"""API schemas of the control plane."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QualityOut(BaseModel):
    """A class's disagreement rate over its current window, with its Wilson interval.

    ``disagreement_rate`` and the interval are null when nothing is graded yet (not a 500).
    """

    task_class: str
    model: str
    status: str
    window_start: datetime
    n_graded: int = Field(description="agree + disagree in the window")
    n_disagree: int
    n_invalid: int = Field(description="invalid or refused verdicts, kept out of the rate")
    disagreement_rate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    rule: str
    rule_action: str
    reason: str
    statistic: float | None = Field(
        default=None, description="the CUSUM statistic S in nats (escalate at S >= decision_limit)"
    )
    decision_limit: float | None = Field(default=None, description="h in nats, for this volume")
    sprt: float | None = Field(
        default=None, description="fresh-start SPRT log-likelihood ratio W (null once it ended)"
    )
    run_n: int | None = Field(default=None, description="verdicts since the statistic left 0")
    run_k: int | None = None
    run_ci_low: float | None = None
    run_ci_high: float | None = None
    blocked: str | None = Field(
        default=None, description="why the class may not be moved (uncalibrated judge), if so"
    )
    rule_state: dict[str, Any] | None = Field(
        default=None, description="the rule's serialised state (evaluator.sequential.RuleState)"
    )


class EscalationOut(BaseModel):
    id: int
    task_class: str
    from_model: str
    to_model: str
    from_status: str
    to_status: str
    actor: str
    reason: str
    rule: str
    n: int
    k: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float
    table_version: int
    window_start: datetime
    created_at: datetime
    evidence: dict[str, Any] | None = None


class ManualChangeIn(BaseModel):
    """Who changes a class by hand, and why (stored on the escalation event)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
    actor: str = Field(default="operator", min_length=1, max_length=64)


class OverrideIn(ManualChangeIn):
    """Move a class to ``model``; ``pin`` also freezes it there."""

    model: str = Field(min_length=1, max_length=128)
    pin: bool = False
