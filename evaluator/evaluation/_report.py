"""The eval report: one data object (:class:`EvalReport`), built from the results log, that the
three renderers (:mod:`evaluator.evaluation._render`) turn into ``report.md``, ``report.json``
and ``report.html``.

Per task class and model: disagreement with the reference model (the grader's verdicts:
``disagree`` / (``agree`` + ``disagree``)) with its Wilson interval (:func:`evaluator.stats.
wilson`, two-sided at the class's ``confidence``); accuracy against the gold answer where the
set has one or recorded correctness (Wilson interval too); the mean judge score where the grader
rates (a Student-t interval, ``scipy.stats.t``); grades without a verdict (invalid + refused,
out of the rate); tokens and serving cost (nano-USD, :func:`router.pricing.cost_nusd`, at the
policy's catalog prices) and grading cost apart.

The recommended routing table: per class, the cheapest candidate (by serving cost per answered
item in this run) whose disagreement's upper bound is below the class's ``threshold``; the
reference model when none is. The curve per benchmark sweeps that threshold over every class's
upper bound (class-level routing, in-sample: the same items choose and score, unlike the
calibration/test split of ``router_metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, Field
from scipy.stats import t as student_t

from evaluator.datasets import HeldOutSet
from evaluator.evaluation._results import Answer, Grade, ResultsLog
from evaluator.evaluation._run import EvalRun, EvalSpec, grading_key
from evaluator.stats import wilson
from router.money import usd
from router.policy import ClassSettings

Measure = Literal["accuracy", "mean_score", "agreement"]


class Interval(BaseModel):
    """k of n with the rate and its two-sided Wilson interval at ``confidence`` (fractions
    0-1; None when n = 0)."""

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None
    confidence: float

    @classmethod
    def of(cls, k: int, n: int, confidence: float) -> Interval:
        est = wilson(k, n, confidence)
        return cls(k=k, n=n, rate=est.rate, low=est.ci_low, high=est.ci_high, confidence=confidence)


class ModelRow(BaseModel):
    """One (task class, model): the evidence and the bill. Costs in nano-USD (None: a model
    without catalog prices), tokens as counted (estimated from text where ``tokens_estimated``)."""

    benchmark: str
    task_class: str
    model: str
    reference: bool
    grader: str
    items: int
    answered: int
    failed: int
    graded: int
    disagree: int
    invalid: int
    disagreement: Interval
    accuracy: Interval | None
    mean_score: float | None
    score_low: float | None
    score_high: float | None
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    cost_nusd: int | None
    grading_cost_nusd: int | None

    @property
    def cost_per_item(self) -> Fraction | None:
        """Serving cost per answered item, nano-USD (exact)."""
        if self.cost_nusd is None or self.answered == 0:
            return None
        return Fraction(self.cost_nusd, self.answered)

    def quality(self, measure: Measure) -> float | None:
        """The class's quality under ``measure`` (accuracy and agreement 0-1, score 1-10)."""
        if measure == "accuracy":
            return self.accuracy.rate if self.accuracy is not None else None
        if measure == "mean_score":
            return self.mean_score
        rate = self.disagreement.rate
        return None if rate is None else 1.0 - rate


class Recommendation(BaseModel):
    """The recommended model of one class and why (``reason`` is the evidence in words)."""

    benchmark: str
    task_class: str
    model: str
    threshold: float
    confidence: float
    evidence: Interval | None
    reason: str
    cost_per_item_nusd: float | None
    reference_cost_per_item_nusd: float | None


class CurvePoint(BaseModel):
    """One point of a benchmark's cost-quality curve: at ``threshold`` (None: a single model
    everywhere, named by ``label``), the share of items on the reference model (0-1), the
    item-weighted quality and the serving cost (nano-USD)."""

    label: str
    threshold: float | None
    strong_share: float
    quality: float
    cost_nusd: int | None


class BenchmarkView(BaseModel):
    """One held-out set: its size, quality measure, each model's overall quality and cost,
    the threshold sweep and the recommended table's point."""

    name: str
    file: str
    items: int
    classes: int
    measure: Measure
    models: dict[str, CurvePoint]
    curve: list[CurvePoint]
    recommended: CurvePoint | None


class FailureRow(BaseModel):
    item: str
    model: str
    stage: str
    message: str


class RunStats(BaseModel):
    """What this invocation did (a resumed run takes earlier answers and grades from the log)."""

    mode: Literal["recorded", "live"]
    answered: int
    graded: int
    resumed_answers: int
    resumed_grades: int
    live_calls: int
    failures: int
    seconds: float


class EvalReport(BaseModel):
    """Everything the three renderers show. ``router_metrics``: per benchmark, the router
    metrics of ``evaluator.routing_curve`` (cheap/strong pair, seeds, calibration share, APGR,
    CPT(50%), CPT(80%) with mean/min/max over seeds, random and oracle baselines, the curve's
    points, RouteLLM's published figures, notes; shares and CPT as fractions 0-1), filled in
    by whoever computes them; rendered when present."""

    title: str
    created_at: datetime
    policy: str
    reference: str
    models: list[str]
    datasets: list[dict[str, Any]]
    refused: list[str]
    line_errors: list[str]
    rows: list[ModelRow]
    recommended: list[Recommendation]
    benchmarks: list[BenchmarkView]
    failures: list[FailureRow]
    run: RunStats
    policy_file: str | None = None
    router_metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def _mean_interval(scores: Sequence[float], confidence: float) -> tuple[float, float, float]:
    n = len(scores)
    mean = sum(scores) / n
    if n < 2:
        return mean, mean, mean
    var = sum((s - mean) ** 2 for s in scores) / (n - 1)
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(var / n)
    return mean, mean - half, mean + half


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def model_rows(
    spec: EvalSpec, log: ResultsLog, settings: Mapping[str, ClassSettings]
) -> list[ModelRow]:
    """Per (set, task class, model) the figures of the module doc, from what ``log`` holds for
    these items, models and grading."""
    rows: list[ModelRow] = []
    for held_out in spec.sets:
        for task_type, items in sorted(held_out.by_task_type().items()):
            cs = settings[task_type]
            key = grading_key(spec.reference, cs)
            for model in spec.models:
                answers: list[Answer] = []
                grades: list[Grade] = []
                for item in items:
                    a = log.answers.get((item.id, model))
                    if a is not None:
                        answers.append(a)
                        g = log.grades.get((item.id, model, key))
                        if g is not None:
                            grades.append(g)
                verdicts = [g.verdict for g in grades]
                k = verdicts.count("disagree")
                n = k + verdicts.count("agree")
                known = [a.correct for a in answers if a.correct is not None]
                scores = [
                    g.score
                    for g in grades
                    if g.score is not None
                    and cs.grader == "judge_single"
                    and g.verdict != "invalid"
                ]
                mean = low = high = None
                if scores:  # the interval clipped to the rating scale, 1-10
                    mean, low, high = _mean_interval(scores, cs.confidence)
                    low, high = max(low, 1.0), min(high, 10.0)
                rows.append(
                    ModelRow(
                        benchmark=held_out.name,
                        task_class=task_type,
                        model=model,
                        reference=model == spec.reference,
                        grader=cs.grader,
                        items=len(items),
                        answered=len(answers),
                        failed=len(items) - len(answers),
                        graded=n,
                        disagree=k,
                        invalid=len(grades) - n,
                        disagreement=Interval.of(k, n, cs.confidence),
                        accuracy=(
                            Interval.of(sum(known), len(known), cs.confidence) if known else None
                        ),
                        mean_score=mean,
                        score_low=low,
                        score_high=high,
                        input_tokens=sum(a.usage.total_input_tokens for a in answers),
                        output_tokens=sum(a.usage.output_tokens for a in answers),
                        tokens_estimated=any(a.usage_estimated for a in answers),
                        cost_nusd=_sum_or_none(a.cost_nusd for a in answers),
                        grading_cost_nusd=_sum_or_none(g.cost_nusd for g in grades),
                    )
                )
    return rows


def _fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def recommend_class(
    rows: Sequence[ModelRow], reference: str, threshold: float, confidence: float
) -> Recommendation:
    """The cheapest row whose disagreement's upper bound is below ``threshold`` (the reference
    when none is); ``rows`` are one class's, every model's. Candidates without a price or
    without graded items cannot qualify."""
    ref = next(r for r in rows if r.model == reference)
    eligible: list[ModelRow] = []
    notes: list[str] = []
    for row in rows:
        if row.reference:
            continue
        high = row.disagreement.high
        if row.cost_per_item is None:
            notes.append(f"{row.model}: unpriced or unanswered")
        elif high is None:
            notes.append(f"{row.model}: nothing graded")
        elif high < threshold:
            eligible.append(row)
        else:
            d = row.disagreement
            notes.append(f"{row.model} {d.k}/{d.n} disagree, upper {_fmt_rate(high)}")
    ref_cost = ref.cost_per_item
    if eligible:
        best = min(eligible, key=lambda r: (r.cost_per_item or 0, r.model))
        d = best.disagreement
        reason = (
            f"{d.k}/{d.n} disagree with {reference}, {confidence:.0%} upper bound "
            f"{_fmt_rate(d.high)} < threshold {threshold:.1%}; cheapest of {len(eligible)} "
            "proven"
        )
        if (
            ref_cost is not None
            and best.cost_per_item is not None
            and best.cost_per_item > ref_cost
        ):
            reason += f" (dearer than {reference})"
        chosen, evidence = best, d
    else:
        smallest = max((r.graded for r in rows if not r.reference), default=0)
        floor = wilson(0, smallest, confidence).ci_high if smallest else None
        why = "; ".join(notes) or "no candidate"
        reason = f"no candidate proven below {threshold:.1%} ({why})"
        if floor is not None and floor >= threshold:
            reason += (
                f"; {smallest} items cannot prove it: even 0/{smallest} has upper bound "
                f"{_fmt_rate(floor)}"
            )
        chosen, evidence = ref, None
    return Recommendation(
        benchmark=ref.benchmark,
        task_class=ref.task_class,
        model=chosen.model,
        threshold=threshold,
        confidence=confidence,
        evidence=evidence,
        reason=reason,
        cost_per_item_nusd=float(chosen.cost_per_item)
        if chosen.cost_per_item is not None
        else None,
        reference_cost_per_item_nusd=float(ref_cost) if ref_cost is not None else None,
    )


def _by_class(rows: Sequence[ModelRow]) -> dict[tuple[str, str], list[ModelRow]]:
    out: dict[tuple[str, str], list[ModelRow]] = {}
    for row in rows:
        out.setdefault((row.benchmark, row.task_class), []).append(row)
    return out


def recommendations(
    rows: Sequence[ModelRow],
    reference: str,
    settings: Mapping[str, ClassSettings],
    threshold: float | None = None,
) -> list[Recommendation]:
    """:func:`recommend_class` for every class, at ``threshold`` or else the class's own."""
    return [
        recommend_class(
            group,
            reference,
            threshold if threshold is not None else settings[task].threshold,
            settings[task].confidence,
        )
        for (_, task), group in _by_class(rows).items()
    ]


def _measure(rows: Sequence[ModelRow]) -> Measure:
    if rows and all(r.accuracy is not None for r in rows):
        return "accuracy"
    if rows and all(r.mean_score is not None for r in rows):
        return "mean_score"
    return "agreement"


def _point(
    label: str,
    threshold: float | None,
    choice: Sequence[ModelRow],
    measure: Measure,
) -> CurvePoint | None:
    """The benchmark's point when each class is served by its row in ``choice``."""
    items = sum(r.items for r in choice)
    qualities = [(r.quality(measure), r.items) for r in choice]
    if not items or any(q is None for q, _ in qualities):
        return None
    quality = sum(float(q or 0.0) * n for q, n in qualities) / items
    strong = sum(r.items for r in choice if r.reference) / items
    return CurvePoint(
        label=label,
        threshold=threshold,
        strong_share=strong,
        quality=quality,
        cost_nusd=_sum_or_none(r.cost_nusd for r in choice),
    )


def benchmark_views(
    sets: Sequence[HeldOutSet],
    rows: Sequence[ModelRow],
    recommended: Sequence[Recommendation],
    models: Sequence[str],
) -> list[BenchmarkView]:
    """Per set: each model alone, the threshold sweep (every class's upper bound, each a
    point), and the recommended table's point."""
    views = []
    for held_out in sets:
        mine = [r for r in rows if r.benchmark == held_out.name]
        groups = {task: g for (bench, task), g in _by_class(mine).items()}
        measure = _measure(mine)
        alone = {}
        for model in models:
            picked = [r for r in mine if r.model == model]
            pt = _point(model, None, picked, measure)
            if pt is not None:
                alone[model] = pt
        ref = {task: next(r for r in g if r.reference) for task, g in groups.items()}
        cuts = sorted(
            {
                r.disagreement.high
                for r in mine
                if not r.reference and r.disagreement.high is not None
            }
        )
        curve: list[CurvePoint] = []
        for cut in [0.0, *(c + 1e-12 for c in cuts)]:
            choice = []
            for task, group in groups.items():
                ok = [
                    r
                    for r in group
                    if not r.reference
                    and r.cost_per_item is not None
                    and r.disagreement.high is not None
                    and r.disagreement.high < cut
                ]
                choice.append(min(ok, key=lambda r: r.cost_per_item or 0) if ok else ref[task])
            pt = _point(f"threshold {cut:.3f}", cut, choice, measure)
            if pt is not None:
                curve.append(pt)
        chosen = {(r.task_class, r.model) for r in recommended if r.benchmark == held_out.name}
        rec_rows = [r for r in mine if (r.task_class, r.model) in chosen]
        views.append(
            BenchmarkView(
                name=held_out.name,
                file=str(held_out.path),
                items=len(held_out.items),
                classes=len(groups),
                measure=measure,
                models=alone,
                curve=curve,
                recommended=_point("recommended", None, rec_rows, measure),
            )
        )
    return views


def build_report(
    spec: EvalSpec,
    log: ResultsLog,
    run: EvalRun,
    *,
    seconds: float,
    threshold: float | None = None,
    refused: Sequence[str] = (),
    line_errors: Sequence[str] = (),
    title: str = "tierwise eval",
) -> EvalReport:
    """The report of ``spec`` from ``log`` (module doc); ``threshold`` overrides every class's.

    Raises:
        InvalidInput: the class settings are invalid (as :meth:`EvalSpec.settings_by_class`).
    """
    settings = spec.settings_by_class()
    rows = model_rows(spec, log, settings)
    recs = recommendations(rows, spec.reference, settings, threshold)
    notes = []
    if any(r.tokens_estimated for r in rows):
        notes.append(
            "Tokens of recorded answers without recorded usage are estimated from the text "
            "(4 characters a token; one output token for a correctness-only recording), and "
            "costs follow from them."
        )
    return EvalReport(
        title=title,
        created_at=datetime.now(UTC),
        policy=spec.policy.name,
        reference=spec.reference,
        models=list(spec.models),
        datasets=[
            {
                "name": s.name,
                "file": str(s.path),
                "items": len(s.items),
                "classes": len(s.task_types),
            }
            for s in spec.sets
        ],
        refused=list(refused),
        line_errors=list(line_errors),
        rows=rows,
        recommended=recs,
        benchmarks=benchmark_views(spec.sets, rows, recs, spec.models),
        failures=[
            FailureRow(item=f.item, model=f.model, stage=f.stage, message=f.message)
            for f in run.failures[:200]
        ],
        run=RunStats(
            mode="live" if spec.live else "recorded",
            answered=run.answered,
            graded=run.graded,
            resumed_answers=run.resumed_answers,
            resumed_grades=run.resumed_grades,
            live_calls=run.live_calls,
            failures=len(run.failures),
            seconds=round(seconds, 3),
        ),
        notes=notes,
    )


def usd_text(nusd: float | int | None) -> str:
    """Nano-USD as ``$1.2345`` (4 decimals; ``n/a`` when unpriced)."""
    if nusd is None:
        return "n/a"
    value = usd(int(nusd)) if isinstance(nusd, int) else nusd / 1e9
    return f"${value:,.4f}" if value is not None else "n/a"
