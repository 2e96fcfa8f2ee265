"""API schemas of the control plane."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class QualityOut(BaseModel):
    """A class's disagreement rate over its current window, with its Wilson interval.

    ``disagreement_rate`` and the interval are null when nothing is graded yet (field case A1).
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
