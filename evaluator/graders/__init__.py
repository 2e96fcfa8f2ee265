"""Graders: decide whether the cheap model's answer agrees with the reference.

A grader has one abstract method, :meth:`Grader.step`: given the answers so far it states the
next :class:`Stage` of provider calls or returns the :class:`GradeResult` (two phases: what to
ask, then what the answers mean; a pairwise judge has two stages). :meth:`Grader.grade` runs the
stages back to back in real time; batch grading submits them through a batch API.
:data:`GRADERS` is the registry by name (the ``grader`` setting of a task class). Graders never
call providers and never write to the database. Verdicts: ``agree``, ``disagree``, ``invalid``
(no usable verdict: unparseable, truncated, missing reference) and ``refused``; only
agree/disagree enter the disagreement rate.

=====================  ==========================================================================
grader                 how it decides
=====================  ==========================================================================
``exact``              reference answers; normalised string equality (case, whitespace,
                       punctuation, ``synonyms``)
``label``              reference answers; same class label (whole-token, ``labels``, ``synonyms``)
``json_fields``        reference answers; selected ``json_fields`` of the two JSON outputs
``numeric``            reference answers; same final number within ``numeric_tolerance``
``choice``             reference answers; same multiple-choice letter (``choice_letters``)
``reference_answer``   reference answers; the ``compare`` setting picks one of the five above
``judge_single``       reference rates the answer 1-10 (MT-Bench single-answer template)
``judge_pairwise``     reference answers, then judges both answers in both orders (MT-Bench
                       ``pair-v2``); an inconsistent pair is a tie (``position_flip``)
``recorded_correctness`` held-out correctness flags only (MMLU); no model call
=====================  ==========================================================================

A class graded by a judge escalates only with a calibrated judge: see
:func:`evaluator.calibration.may_escalate`.
"""

from __future__ import annotations

from evaluator.graders._base import (
    Answers,
    Grader,
    GraderEnv,
    GradeResult,
    SampleView,
    Stage,
    add_usage,
    answer_request,
    no_verdict,
)
from evaluator.graders._compare import (
    COMPARERS,
    Comparison,
    compare_choice,
    compare_exact,
    compare_json_fields,
    compare_label,
    compare_numeric,
    select_path,
)
from evaluator.graders._judge import (
    JudgePairwiseGrader,
    JudgeSingleGrader,
    pairwise_judge_request,
    read_pairwise_verdict,
)
from evaluator.graders._reference import (
    ChoiceGrader,
    ComparisonGrader,
    ExactGrader,
    JsonFieldsGrader,
    LabelGrader,
    NumericGrader,
    RecordedCorrectnessGrader,
    ReferenceAnswerGrader,
)

JUDGE_GRADERS = frozenset({"judge_single", "judge_pairwise"})
"""Graders whose verdict is a model's judgment (need a calibrated judge to escalate)."""

GRADERS: dict[str, Grader] = {
    g.name: g
    for g in (
        ExactGrader(),
        LabelGrader(),
        JsonFieldsGrader(),
        NumericGrader(),
        ChoiceGrader(),
        ReferenceAnswerGrader(),
        JudgeSingleGrader(),
        JudgePairwiseGrader(),
        RecordedCorrectnessGrader(),
    )
}
"""Every grader by its ``name`` (the ``grader`` class setting)."""

__all__ = [
    "COMPARERS",
    "GRADERS",
    "JUDGE_GRADERS",
    "Answers",
    "ChoiceGrader",
    "Comparison",
    "ComparisonGrader",
    "ExactGrader",
    "GradeResult",
    "Grader",
    "GraderEnv",
    "JsonFieldsGrader",
    "JudgePairwiseGrader",
    "JudgeSingleGrader",
    "LabelGrader",
    "NumericGrader",
    "RecordedCorrectnessGrader",
    "ReferenceAnswerGrader",
    "SampleView",
    "Stage",
    "add_usage",
    "answer_request",
    "compare_choice",
    "compare_exact",
    "compare_json_fields",
    "compare_label",
    "compare_numeric",
    "no_verdict",
    "pairwise_judge_request",
    "read_pairwise_verdict",
    "select_path",
]
