"""Graders: decide whether the cheap model's answer agrees with the reference.

A grader has one abstract method, :meth:`Grader.grade`; :data:`GRADERS` is the registry by name
(the ``grader`` setting of a task class). Graders return a :class:`GradeResult`; they never write
to the database. Verdicts: ``agree``, ``disagree``, ``invalid`` (no usable verdict: unparseable,
truncated, missing reference) and ``refused``; only agree/disagree enter the disagreement rate.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evaluator.datasets import HeldOutItem
from evaluator.parsing import final_number, numbers_match, parse_rating
from evaluator.providers.base import ChatRequest, Provider
from router.policy import ClassSettings
from router.pricing import Usage
from router.tokens import text_of


@dataclass(frozen=True, slots=True)
class SampleView:
    """What a grader sees of a sample: the conversation, the graded answer, the decision meta."""

    decision_id: str
    task_class: str
    model: str
    input_messages: list[dict[str, Any]]
    output_text: str
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GradeResult:
    """A verdict with the raw text it came from and the tokens spent getting it."""

    verdict: str
    parse_status: str
    raw_output: str = ""
    score: float | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class GraderEnv:
    """What graders may use: the reference model's provider, held-out items by id, judge
    prompt templates by name (MT-Bench ``judge_prompts.jsonl``)."""

    provider_for: Callable[[str], Provider]
    items: Mapping[str, HeldOutItem]
    judge_prompts: Mapping[str, Mapping[str, Any]]

    def item_of(self, sample: SampleView) -> HeldOutItem | None:
        item_id = sample.meta.get("item_id") if sample.meta else None
        return self.items.get(item_id) if isinstance(item_id, str) else None


class Grader(abc.ABC):
    """Base class: subclasses set ``name`` and implement ``grade``."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        """Grade one sample against ``reference_model``.

        Raises:
            ProviderError: the reference call failed (the job decides whether to retry).
        """


class NumericGrader(Grader):
    """Final numeric answer of the cheap model vs the reference model's own answer.

    The reference model answers the same conversation; both final numbers are read with
    :func:`evaluator.parsing.final_number` (GSM8K ``#### N``, else the last number). No number in
    the cheap answer is a disagreement; none in the reference answer makes the grade invalid.
    """

    name = "numeric"

    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        reply = await env.provider_for(reference_model).complete(
            ChatRequest(model=reference_model, messages=sample.input_messages, max_tokens=1024)
        )
        if reply.finish_reason == "length":
            return GradeResult("invalid", "truncated", reply.text, usage=reply.usage)
        ref = final_number(reply.text)
        if ref is None:
            return GradeResult("invalid", "reference_no_number", reply.text, usage=reply.usage)
        got = final_number(sample.output_text)
        if got is None:
            return GradeResult("disagree", "candidate_no_number", reply.text, usage=reply.usage)
        verdict = "agree" if numbers_match(got, ref) else "disagree"
        return GradeResult(verdict, "ok", reply.text, score=got, usage=reply.usage)


class RecordedCorrectnessGrader(Grader):
    """For held-out items with recorded correctness only (MMLU): disagree when exactly one of the
    graded model and the reference model was recorded correct. No model call, no cost."""

    name = "recorded_correctness"

    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
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


def _turns(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    assistants = [text_of(m.get("content")) for m in messages if m.get("role") == "assistant"]
    return users, assistants


class JudgeSingleGrader(Grader):
    """The reference model rates the answer 1-10 with MT-Bench's single-answer template
    (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", NeurIPS 2023;
    templates from FastChat ``llm_judge/data/judge_prompts.jsonl``). The reference-guided
    ``single-math-v1`` variant is used when the held-out item carries reference answers.
    A rating below the class's ``pass_mark`` is a disagreement.
    """

    name = "judge_single"

    def build_prompt(self, sample: SampleView, env: GraderEnv) -> tuple[str, str, str]:
        """(template name, system prompt, user prompt) for this sample."""
        users, assistants = _turns(sample.input_messages)
        item = env.item_of(sample)
        refs = item.reference_turns if item is not None else []
        math = len(refs) == len(users) and len(refs) > 0
        if len(users) == 1:
            name = "single-math-v1" if math else "single-v1"
            fields = {"question": users[0], "answer": sample.output_text}
            if math:
                fields["ref_answer_1"] = refs[0]
        else:
            name = "single-math-v1-multi-turn" if math else "single-v1-multi-turn"
            fields = {
                "question_1": users[0],
                "question_2": users[1],
                "answer_1": assistants[0] if assistants else "",
                "answer_2": sample.output_text,
            }
            if math:
                fields["ref_answer_1"], fields["ref_answer_2"] = refs[0], refs[1]
        template = env.judge_prompts[name]
        return name, str(template["system_prompt"]), str(template["prompt_template"]).format(**fields)

    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        _, system, prompt = self.build_prompt(sample, env)
        reply = await env.provider_for(reference_model).complete(
            ChatRequest(
                model=reference_model,
                system=system,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=2048,
            )
        )
        parsed = parse_rating(reply.text, finish_reason=reply.finish_reason)
        if parsed.score is None:
            verdict = "refused" if parsed.status == "refused" else "invalid"
            return GradeResult(verdict, parsed.status, reply.text, usage=reply.usage)
        verdict = "disagree" if parsed.score < settings.pass_mark else "agree"
        return GradeResult(verdict, "ok", reply.text, score=parsed.score, usage=reply.usage)


GRADERS: dict[str, Grader] = {
    g.name: g for g in (NumericGrader(), RecordedCorrectnessGrader(), JudgeSingleGrader())
}
