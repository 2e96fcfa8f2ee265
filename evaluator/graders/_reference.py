"""Graders that compare with the reference model's own answer, and the recorded-correctness one."""

from __future__ import annotations

from typing import ClassVar

from evaluator.graders._base import (
    Answers,
    Grader,
    GraderEnv,
    GradeResult,
    SampleView,
    Stage,
    answer_request,
    no_verdict,
)
from evaluator.graders._compare import COMPARERS
from evaluator.parsing import no_verdict_status
from router.policy import ClassSettings


class ComparisonGrader(Grader):
    """The reference model answers the sample's conversation itself; a comparer from
    :data:`~evaluator.graders._compare.COMPARERS` decides whether the graded answer agrees.

    A reference reply cut off by the token limit, refused or empty gives no verdict
    (``truncated`` / ``refused`` / ``empty``); an unreadable reference answer is
    ``invalid`` (``reference_<status>``); an unreadable graded answer is a ``disagree``.
    ``raw_output`` is the reference's answer.
    """

    name: ClassVar[str]
    compare: ClassVar[str | None] = None
    max_tokens: ClassVar[int] = 1024

    def comparer_name(self, settings: ClassSettings) -> str:
        """The comparer this grader uses for ``settings``."""
        return self.compare or settings.compare

    def step(
        self,
        sample: SampleView,
        settings: ClassSettings,
        reference_model: str,
        env: GraderEnv,
        answers: Answers,
    ) -> Stage | GradeResult:
        reply = answers.get("reference")
        if reply is None:
            request = answer_request(sample, reference_model, max_tokens=self.max_tokens)
            return Stage({"reference": request})
        missing = no_verdict_status(reply.text, reply.finish_reason)
        if missing is not None:
            return no_verdict(missing, reply.text, reply.usage)
        try:
            result = COMPARERS[self.comparer_name(settings)](
                reply.text, sample.output_text, settings
            )
        except ValueError:  # conflicting synonyms in the class settings
            return GradeResult("invalid", "bad_settings", reply.text, usage=reply.usage)
        return GradeResult(
            result.verdict, result.status, reply.text, score=result.score, usage=reply.usage
        )


class ExactGrader(ComparisonGrader):
    """Normalised string equality (case, whitespace, punctuation, ``synonyms``)."""

    name = "exact"
    compare = "exact"


class LabelGrader(ComparisonGrader):
    """Same class label: whole-token matching against the class's ``labels`` and ``synonyms``
    (a labelled field first; see :func:`evaluator.parsing.find_label`)."""

    name = "label"
    compare = "label"


class JsonFieldsGrader(ComparisonGrader):
    """Selected ``json_fields`` of the two JSON answers, per-field normalisation."""

    name = "json_fields"
    compare = "json_fields"


class NumericGrader(ComparisonGrader):
    """Same final number (GSM8K ``#### N``, else the last number) within the class's
    ``numeric_tolerance`` (relative) / ``numeric_abs_tolerance``."""

    name = "numeric"
    compare = "numeric"


class ChoiceGrader(ComparisonGrader):
    """Same multiple-choice letter (a labelled field first, then anchored patterns; last match,
    whole token)."""

    name = "choice"
    compare = "choice"


class ReferenceAnswerGrader(ComparisonGrader):
    """The reference answers first; the class's ``compare`` setting (``exact``, ``label``,
    ``json_fields``, ``numeric`` or ``choice``) decides."""

    name = "reference_answer"


class RecordedCorrectnessGrader(Grader):
    """For held-out items with recorded correctness only (MMLU): disagree when exactly one of the
    graded model and the reference model was recorded correct. No model call, no cost."""

    name = "recorded_correctness"

    def step(
        self,
        sample: SampleView,
        settings: ClassSettings,
        reference_model: str,
        env: GraderEnv,
        answers: Answers,
    ) -> Stage | GradeResult:
        item = env.item_of(sample)
        if item is None:
            return GradeResult("invalid", "no_held_out_item")
        mine = item.outputs.get(sample.model)
        ref = item.outputs.get(reference_model)
        if mine is None or ref is None or mine.correct is None or ref.correct is None:
            return GradeResult("invalid", "correctness_not_recorded")
        raw = f"{sample.model} correct={mine.correct}; {reference_model} correct={ref.correct}"
        verdict = "disagree" if mine.correct != ref.correct else "agree"
        return GradeResult(verdict, "ok", raw)
