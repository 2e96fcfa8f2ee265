"""Judge graders: the reference model rates (single) or compares (pairwise) answers.

Templates are MT-Bench's (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot
Arena", NeurIPS 2023), as shipped in FastChat ``llm_judge/data/judge_prompts.jsonl`` and copied
to ``datasets/mt_bench_judge_prompts.jsonl``.
"""

from __future__ import annotations

from typing import Any

from evaluator.graders._base import (
    Grader,
    GraderEnv,
    GradeResult,
    SampleView,
    add_usage,
    no_verdict,
    reference_answer,
)
from evaluator.parsing import no_verdict_status, parse_pairwise, parse_rating
from evaluator.providers.base import ChatRequest, ChatResponse
from router.policy import ClassSettings
from router.tokens import text_of


def _turns(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    assistants = [text_of(m.get("content")) for m in messages if m.get("role") == "assistant"]
    return users, assistants


def _transcript(messages: list[dict[str, Any]]) -> str:
    """A conversation of more than two user turns as one question (no MT-Bench template has
    more than two turns)."""
    return "\n\n".join(
        f"### {str(m.get('role', 'user')).capitalize()}:\n{text_of(m.get('content'))}"
        for m in messages
        if m.get("role") in ("user", "assistant")
    )


async def _judge(env: GraderEnv, model: str, system: str, prompt: str) -> ChatResponse:
    return await env.provider_for(model).complete(
        ChatRequest(
            model=model,
            system=system,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=2048,
        )
    )


class JudgeSingleGrader(Grader):
    """The reference model rates the answer 1-10 with MT-Bench's single-answer template
    (``single-v1``, ``single-v1-multi-turn``). The reference-guided ``single-math-v1`` variant is
    used when the held-out item carries reference answers for every turn. A rating below the
    class's ``pass_mark`` is a disagreement; a reply without a readable rating (J1/J2, see
    :func:`evaluator.parsing.parse_rating`) is ``invalid`` or ``refused``.
    """

    name = "judge_single"

    def build_prompt(self, sample: SampleView, env: GraderEnv) -> tuple[str, str, str]:
        """(template name, system prompt, user prompt) for this sample.

        Raises:
            KeyError: the template is not in ``env.judge_prompts``.
        """
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
        prompt = str(template["prompt_template"]).format(**fields)
        return name, str(template["system_prompt"]), prompt

    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        try:
            _, system, prompt = self.build_prompt(sample, env)
        except KeyError:
            return GradeResult("invalid", "no_judge_template")
        reply = await _judge(env, reference_model, system, prompt)
        parsed = parse_rating(reply.text, finish_reason=reply.finish_reason)
        if parsed.score is None:
            return no_verdict(parsed.status, reply.text, reply.usage)
        verdict = "disagree" if parsed.score < settings.pass_mark else "agree"
        return GradeResult(verdict, "ok", reply.text, score=parsed.score, usage=reply.usage)


# Who won, seen from the graded answer: per order, what [[A]] / [[B]] / [[C]] mean.
_CHEAP_FIRST = {"A": "cheap", "B": "reference", "C": "tie"}
_REFERENCE_FIRST = {"A": "reference", "B": "cheap", "C": "tie"}
_CREDIT = {"cheap": 1.0, "tie": 0.5, "reference": 0.0}


class JudgePairwiseGrader(Grader):
    """The reference model answers the conversation itself, then judges its own answer against
    the graded one with MT-Bench's ``pair-v2`` template (``pair-v2-multi-turn`` for a second
    turn), **in both orders**: graded answer as A, then as B.

    Each order's verdict is the last ``[[A]]``/``[[B]]``/``[[C]]``
    (:func:`evaluator.parsing.parse_pairwise`). Both orders agreeing decide: the reference
    better is a ``disagree``; the graded answer better, or a tie, is an ``agree``. Orders that
    disagree are position bias, not evidence (field case J3, and MT-Bench's own rule: a win
    counts only if it holds in both orders): the pair is a tie (``agree``), stored with
    ``parse_status`` ``position_flip`` and ``position_flip=True`` so the flip rate per class
    can be reported. An order without a verdict (J2) makes the grade ``invalid``/``refused``;
    the second order is then not asked. ``raw_output`` holds the reference answer and both
    judgments; ``usage`` sums all three calls.
    """

    name = "judge_pairwise"

    def build_prompt(
        self, sample: SampleView, answer_a: str, answer_b: str, env: GraderEnv
    ) -> tuple[str, str, str]:
        """(template name, system prompt, user prompt) with ``answer_a`` shown first.

        Raises:
            KeyError: the template is not in ``env.judge_prompts``.
        """
        users, assistants = _turns(sample.input_messages)
        if len(users) == 2:
            name = "pair-v2-multi-turn"
            first = assistants[0] if assistants else ""
            fields = {
                "question_1": users[0],
                "question_2": users[1],
                "answer_a_1": first,
                "answer_a_2": answer_a,
                "answer_b_1": first,
                "answer_b_2": answer_b,
            }
        else:
            name = "pair-v2"
            question = users[0] if len(users) == 1 else _transcript(sample.input_messages)
            fields = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
        template = env.judge_prompts[name]
        prompt = str(template["prompt_template"]).format(**fields)
        return name, str(template["system_prompt"]), prompt

    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        own = await reference_answer(sample, reference_model, env, max_tokens=2048)
        missing = no_verdict_status(own.text, own.finish_reason)
        if missing is not None:
            return no_verdict(f"reference_{missing}", own.text, own.usage)
        raws, usages, winners = [f"[reference answer]\n{own.text}"], [own.usage], []
        for position, a, b, meaning in (
            ("A", sample.output_text, own.text, _CHEAP_FIRST),
            ("B", own.text, sample.output_text, _REFERENCE_FIRST),
        ):
            try:
                _, system, prompt = self.build_prompt(sample, a, b, env)
            except KeyError:
                return GradeResult("invalid", "no_judge_template", usage=add_usage(*usages))
            reply = await _judge(env, reference_model, system, prompt)
            usages.append(reply.usage)
            raws.append(f"[judgment, graded answer as {position}]\n{reply.text}")
            parsed = parse_pairwise(reply.text, finish_reason=reply.finish_reason)
            if parsed.winner is None:
                return no_verdict(parsed.status, "\n\n".join(raws), add_usage(*usages))
            winners.append(meaning[parsed.winner])
        raw, usage = "\n\n".join(raws), add_usage(*usages)
        if winners[0] != winners[1]:
            return GradeResult(
                "agree", "position_flip", raw, score=0.5, usage=usage, position_flip=True
            )
        verdict = "disagree" if winners[0] == "reference" else "agree"
        return GradeResult(
            verdict, "ok", raw, score=_CREDIT[winners[0]], usage=usage, position_flip=False
        )
