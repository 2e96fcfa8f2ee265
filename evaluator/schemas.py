"""API schemas of the control plane."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from router.schemas import PRINTABLE_PATTERN, Text


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

    reason: Text = Field(min_length=1, max_length=2000)
    actor: str = Field(default="operator", min_length=1, max_length=64, pattern=PRINTABLE_PATTERN)


class OverrideIn(ManualChangeIn):
    """Move a class to ``model``; ``pin`` also freezes it there."""

    model: str = Field(min_length=1, max_length=128, pattern=PRINTABLE_PATTERN)
    pin: bool = Field(default=False, strict=True)


class CostRowOut(BaseModel):
    """One group of a cost view (or the totals): its keys (only those grouped by; ``caller``
    null = no key), counts, tokens, and money twice: USD as numbers (``*_usd``) and the exact
    whole nano-USD (``*_nusd``, 1e-9 USD; sums of these are exact). ``counterfactual_*`` /
    ``savings_*`` are null when the premium model has no catalog row (evaluator.costs)."""

    day: str | None = Field(default=None, description="UTC day, YYYY-MM-DD")
    task_class: str | None = None
    model: str | None = Field(default=None, description="the served model")
    tier: str | None = None
    caller: str | None = Field(default=None, description="api_key.id; null = no key")
    requests: int = Field(description="decisions with an outcome")
    unpriced: int = Field(description="outcomes with no cost (NULL), never summed as 0")
    sampled: int
    premium_requests: int = Field(description="decisions routed to the premium model")
    premium_share: float | None
    input_tokens: int = Field(description="uncached input tokens")
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    serving_usd: float
    counterfactual_usd: float | None = Field(
        description="the priced outcomes' usage at the premium model's catalog prices"
    )
    savings_usd: float | None = Field(description="counterfactual - serving")
    grading_usd: float = Field(description="judge calls and reference answers")
    shadow_grading_usd: float = Field(description="shadow probes")
    serving_nusd: int
    counterfactual_nusd: int | None
    savings_nusd: int | None
    grading_nusd: int
    shadow_grading_nusd: int
    grades: int
    unpriced_grades: int
    batch_requests: int = Field(description="requests answered through the batch lane")
    batch_share: float | None = Field(description="batch_requests / requests")
    batch_serving_usd: float = Field(description="their discounted cost, inside serving")
    batch_saved_usd: float = Field(description="their cost at real-time prices - batch_serving")
    batch_serving_nusd: int
    batch_saved_nusd: int
    cache_lookups: int = Field(description="requests the semantic cache saw")
    cache_hits: int = Field(description="requests it answered")
    cache_hit_rate: float | None
    cache_graded_hits: int = Field(description="hits graded like any cheap answer")
    cache_false_hits: int = Field(description="graded hits the reference disagreed with")
    cache_false_hit_rate: float | None
    cache_false_hit_ci: list[float] | None = Field(description="Wilson 95% [low, high]")
    cache_saved_usd: float = Field(description="the hits' replaced calls at the routed model")
    embedding_usd: float = Field(description="the lookups' embedding spend, apart from serving")
    cache_saved_nusd: int
    embedding_nusd: int


class ClassEconomicsOut(BaseModel):
    """What routing a class saves against what grading it costs (USD) and the break-even
    sampling rate ``sample_rate x savings / grading`` (evaluator.costs)."""

    task_class: str
    requests: int
    sampled: int
    sample_rate: float | None
    savings_usd: float | None
    grading_usd: float = Field(description="including shadow probes")
    break_even_rate: float | None
    grading_exceeds_savings: bool


class CostsOut(BaseModel):
    """``GET /v1/costs``: the range (UTC ISO; null = open), the grouping, the premium model,
    the totals, one row per group, and every class's economics."""

    since: str | None
    until: str | None
    group_by: list[str]
    premium_model: str | None
    totals: CostRowOut
    rows: list[CostRowOut]
    classes: list[ClassEconomicsOut]


class EvidenceSampleOut(BaseModel):
    """One graded sample behind an escalation event (evaluator.evidence). ``input_messages``,
    ``answer`` and ``judge_output`` are null unless the caller may read sampled text (scope
    ``read-samples``); ``answer`` is also null for a shadow probe (its answer is not stored)."""

    grade_id: int
    decision_id: str
    model: str = Field(description="the model whose answer was graded")
    reference_model: str
    grader: str
    shadow: bool = Field(description="a shadow probe of the cheaper model (the way back)")
    verdict: str = Field(description="agree | disagree | invalid | refused")
    score: float | None = Field(description="judge rating 1-10, or pairwise credit 0/0.5/1")
    parse_status: str
    decided_at: datetime
    graded_at: datetime
    input_messages: list[dict[str, Any]] | None = Field(description="the input conversation")
    answer: str | None = Field(description="the graded (cheap) model's answer")
    judge_output: str | None = Field(
        description="the reference model's answer, or the judge's explanation and verdict"
    )


class EvidenceOut(BaseModel):
    """``GET /v1/escalations/{event_id}``: the event, the verdict counts of every sample behind
    it, one page of those samples (by grade id), and the cursor of the next page (null: the
    last). ``text_included`` says whether the samples carry their text."""

    event: EscalationOut
    counts: dict[str, int] = Field(description="verdict -> samples, over every page")
    text_included: bool
    samples: list[EvidenceSampleOut]
    next_cursor: str | None


class CompressionBooksOut(BaseModel):
    """``GET /v1/compression``: per class its compression level and ratio, calls compressed
    and sent whole, tokens and USD saved, the guard's graded probes with the disagreement rate
    and its Wilson interval, the guard's spend; and the latest level changes with their
    evidence (:func:`evaluator.compression.compression_books` lists every field)."""

    model_config = ConfigDict(extra="allow")

    classes: list[dict[str, Any]]
    events: list[dict[str, Any]]
