"""Evaluations over held-out sets (``tierwise eval DATASET... --models A,B``): candidates answer
every item (recorded or live), the configured grader grades each answer against the reference
model, the results go to a resumable log, and one report object (:class:`EvalReport`) is
rendered as Markdown, JSON and self-contained HTML, with the recommended routing table written
as a policy file."""

from evaluator.evaluation._export import export_samples
from evaluator.evaluation._policy import recommended_policy
from evaluator.evaluation._render import render_html, render_json, render_markdown
from evaluator.evaluation._report import (
    BenchmarkView,
    CurvePoint,
    EvalReport,
    Interval,
    ModelRow,
    Recommendation,
    build_report,
    recommend_class,
    recommendations,
)
from evaluator.evaluation._results import RESULTS_FILE, Answer, Grade, ResultsLog
from evaluator.evaluation._run import (
    EvalRun,
    EvalSpec,
    Failure,
    class_settings,
    gold_correct,
    grading_key,
    run_eval,
)

__all__ = [
    "RESULTS_FILE",
    "Answer",
    "BenchmarkView",
    "CurvePoint",
    "EvalReport",
    "EvalRun",
    "EvalSpec",
    "Failure",
    "Grade",
    "Interval",
    "ModelRow",
    "Recommendation",
    "ResultsLog",
    "build_report",
    "class_settings",
    "export_samples",
    "gold_correct",
    "grading_key",
    "recommend_class",
    "recommendations",
    "recommended_policy",
    "render_html",
    "render_json",
    "render_markdown",
    "run_eval",
]
