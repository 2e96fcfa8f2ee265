"""Judge graders: the reference model rates (single) or compares (pairwise) answers.

Templates are MT-Bench's (Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot
Arena", NeurIPS 2023), as shipped in FastChat ``llm_judge/data/judge_prompts.jsonl`` (Apache-2.0)
and copied beside this module to ``judge_prompts.jsonl`` (package data; see ``datasets/README.md``).

Structured verdicts: when the judge's provider has ``supports_structured_output`` (OpenAI,
Anthropic), the call carries a verdict schema (:data:`RATING_SCHEMA` for judge_single,
:data:`PAIRWISE_SCHEMA` for each order of judge_pairwise) and the MT-Bench prompt, unchanged,
gets one closing paragraph saying to answer through the schema (the template's own
"[[rating]]" / "[[A]]" instruction stays, so a reply that ignores the schema still carries a
readable verdict). The JSON is read first (:func:`evaluator.parsing.parse_rating_json`,
:func:`~evaluator.parsing.parse_pairwise_json`: the whole reply, a markdown code fence or an
object in prose, its verdict field and never its explanation); a reply without the expected JSON
falls back to the text parsers, which read a JSON verdict field the same way. A verdict read
from the JSON is stored with ``parse_status`` ``ok_structured``; one read from text keeps
``ok``. Providers without structured output (the replay provider, whose recordings are free text
keyed by the exact prompt) get the plain template, byte for byte as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from evaluator.parsing import (
    ParsedPairwise,
    ParsedRating,
    no_verdict_status,
    parse_pairwise,
    parse_pairwise_json,
    parse_rating,
    parse_rating_json,
)
from router.policy import ClassSettings
from router.providers.base import ChatRequest, ChatResponse
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


# parse_status of a verdict read from a structured (JSON) reply; text verdicts keep "ok".
OK_STRUCTURED = "ok_structured"

# {"explanation": str, "rating": int 1..10}. Strict-mode ready (OpenAI "Structured Outputs":
# every property required, additionalProperties false); minimum/maximum guide the model, and the
# range is checked again on reading (an out-of-range rating is invalid, never clamped).
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "description": "Your evaluation, before the rating."},
        "rating": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10,
            "description": "The rating, an integer from 1 to 10.",
        },
    },
    "required": ["explanation", "rating"],
    "additionalProperties": False,
}

# {"explanation": str, "verdict": "A" | "B" | "C"}: A better, B better, C a tie.
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "description": "Your comparison, before the verdict."},
        "verdict": {
            "type": "string",
            "enum": ["A", "B", "C"],
            "description": '"A" if assistant A is better, "B" if assistant B is better, '
            '"C" for a tie.',
        },
    },
    "required": ["explanation", "verdict"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class _Schema:
    """A verdict schema, its name on the wire, and the paragraph appended to the prompt."""

    name: str
    schema: dict[str, Any]
    instruction: str


_RATING = _Schema(
    "judge_rating",
    RATING_SCHEMA,
    'Give your evaluation through the judge_rating schema: your explanation in "explanation" '
    'and your rating, an integer from 1 to 10, in "rating".',
)
_PAIRWISE = _Schema(
    "judge_verdict",
    PAIRWISE_SCHEMA,
    'Give your evaluation through the judge_verdict schema: your explanation in "explanation" '
    'and your final verdict in "verdict": "A" if assistant A is better, "B" if assistant B is '
    'better, "C" for a tie.',
)


def _structured(env: GraderEnv, model: str) -> bool:
    """Whether ``model``'s provider answers through a JSON schema (so the judge is asked to)."""
    return env.provider_for(model).supports_structured_output


def _judge_request(
    env: GraderEnv, model: str, system: str, prompt: str, schema: _Schema
) -> ChatRequest:
    """One judge call. A provider without ``supports_structured_output`` gets exactly
    ``prompt`` and no schema."""
    structured = _structured(env, model)
    return ChatRequest(
        model=model,
        system=system,
        messages=[
            {
                "role": "user",
                "content": f"{prompt}\n\n{schema.instruction}" if structured else prompt,
            }
        ],
        max_tokens=2048,
        verdict_schema=schema.schema if structured else None,
        verdict_name=schema.name,
    )


def _read_rating(reply: ChatResponse, structured: bool) -> ParsedRating:
    """The JSON rating first when asked for one (``ok`` becomes ``ok_structured``), else or
    when the reply is not that JSON, :func:`parse_rating` on the text."""
    if structured:
        parsed = parse_rating_json(reply.text, finish_reason=reply.finish_reason)
        if parsed is not None:
            return ParsedRating(parsed.score, OK_STRUCTURED) if parsed.score is not None else parsed
    return parse_rating(reply.text, finish_reason=reply.finish_reason)


def _read_pairwise(reply: ChatResponse, structured: bool) -> ParsedPairwise:
    """As :func:`_read_rating`, for a pairwise verdict."""
    if structured:
        parsed = parse_pairwise_json(reply.text, finish_reason=reply.finish_reason)
        if parsed is not None:
            return (
                ParsedPairwise(parsed.winner, OK_STRUCTURED)
                if parsed.winner is not None
                else parsed
            )
    return parse_pairwise(reply.text, finish_reason=reply.finish_reason)


class JudgeSingleGrader(Grader):
    """The reference model rates the answer 1-10 with MT-Bench's single-answer template
    (``single-v1``, ``single-v1-multi-turn``). The reference-guided ``single-math-v1`` variant is
    used when the held-out item carries reference answers for every turn. A rating below the
    class's ``pass_mark`` is a disagreement; a reply without a readable rating (see
    :func:`evaluator.parsing.parse_rating`) is ``invalid`` or ``refused``. With a structured
    provider the rating is asked for as :data:`RATING_SCHEMA` and read from the JSON first
    (``parse_status`` ``ok_structured``), else from the text (``ok``): see the module doc.
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

    def step(
        self,
        sample: SampleView,
        settings: ClassSettings,
        reference_model: str,
        env: GraderEnv,
        answers: Answers,
    ) -> Stage | GradeResult:
        reply = answers.get("judge")
        if reply is None:
            try:
                _, system, prompt = self.build_prompt(sample, env)
            except KeyError:
                return GradeResult("invalid", "no_judge_template")
            return Stage({"judge": _judge_request(env, reference_model, system, prompt, _RATING)})
        parsed = _read_rating(reply, _structured(env, reference_model))
        if parsed.score is None:
            return no_verdict(parsed.status, reply.text, reply.usage)
        verdict = "disagree" if parsed.score < settings.pass_mark else "agree"
        return GradeResult(
            verdict, parsed.status, reply.text, score=parsed.score, usage=reply.usage
        )


# Who won, seen from the graded answer: per order, what [[A]] / [[B]] / [[C]] mean.
_CHEAP_FIRST = {"A": "cheap", "B": "reference", "C": "tie"}
_REFERENCE_FIRST = {"A": "reference", "B": "cheap", "C": "tie"}
_CREDIT = {"cheap": 1.0, "tie": 0.5, "reference": 0.0}


class JudgePairwiseGrader(Grader):
    """The reference model answers the conversation itself, then judges its own answer against
    the graded one with MT-Bench's ``pair-v2`` template (``pair-v2-multi-turn`` for a second
    turn), **in both orders**: graded answer as A, then as B. Two stages: the reference
    answer, then both judgments (independent of each other, so they run concurrently or go
    into one provider batch).

    Each order's verdict is the last ``[[A]]``/``[[B]]``/``[[C]]`` or labelled verdict field
    (:func:`evaluator.parsing.parse_pairwise`). Both orders agreeing decide: the reference
    better is a ``disagree``; the graded answer better, or a tie, is an ``agree``. Orders that
    disagree are position bias, not evidence (MT-Bench's own rule: a win counts only if it
    holds in both orders): the pair is a tie (``agree``), stored with
    ``parse_status`` ``position_flip`` and ``position_flip=True`` so the flip rate per class
    can be reported. An order without a verdict makes the grade ``invalid``/``refused`` (both
    orders were asked, and both are paid). ``raw_output`` holds the reference answer and the
    judgments; ``usage`` sums all three calls. With a structured provider each order is asked
    for as :data:`PAIRWISE_SCHEMA`; an agreeing pair is ``ok_structured`` when both verdicts
    came from the JSON, else ``ok`` (see the module doc).
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

    def step(
        self,
        sample: SampleView,
        settings: ClassSettings,
        reference_model: str,
        env: GraderEnv,
        answers: Answers,
    ) -> Stage | GradeResult:
        own = answers.get("reference")
        if own is None:
            request = answer_request(sample, reference_model, max_tokens=2048)
            return Stage({"reference": request})
        missing = no_verdict_status(own.text, own.finish_reason)
        if missing is not None:
            return no_verdict(f"reference_{missing}", own.text, own.usage)
        orders = (
            ("A", sample.output_text, own.text, _CHEAP_FIRST),
            ("B", own.text, sample.output_text, _REFERENCE_FIRST),
        )
        if f"judge_{orders[0][0]}" not in answers:
            requests = {}
            for position, a, b, _ in orders:
                try:
                    _, system, prompt = self.build_prompt(sample, a, b, env)
                except KeyError:
                    return GradeResult("invalid", "no_judge_template", usage=own.usage)
                requests[f"judge_{position}"] = _judge_request(
                    env, reference_model, system, prompt, _PAIRWISE
                )
            return Stage(requests)
        structured = _structured(env, reference_model)
        replies = [answers[f"judge_{position}"] for position, _, _, _ in orders]
        raw = "\n\n".join(
            [f"[reference answer]\n{own.text}"]
            + [
                f"[judgment, graded answer as {position}]\n{reply.text}"
                for (position, _, _, _), reply in zip(orders, replies, strict=True)
            ]
        )
        usage = add_usage(own.usage, *(reply.usage for reply in replies))
        winners, statuses = [], set()
        for (_, _, _, meaning), reply in zip(orders, replies, strict=True):
            parsed = _read_pairwise(reply, structured)
            if parsed.winner is None:
                return no_verdict(parsed.status, raw, usage)
            winners.append(meaning[parsed.winner])
            statuses.add(parsed.status)
        if winners[0] != winners[1]:
            return GradeResult(
                "agree", "position_flip", raw, score=0.5, usage=usage, position_flip=True
            )
        verdict = "disagree" if winners[0] == "reference" else "agree"
        status = OK_STRUCTURED if statuses == {OK_STRUCTURED} else "ok"
        return GradeResult(
            verdict, status, raw, score=_CREDIT[winners[0]], usage=usage, position_flip=False
        )


def pairwise_judge_request(env: GraderEnv, model: str, system: str, prompt: str) -> ChatRequest:
    """One pairwise judge call exactly as :class:`JudgePairwiseGrader` sends it (the verdict
    schema :data:`PAIRWISE_SCHEMA` when ``model``'s provider supports structured output), for
    measuring the same judge outside grading (``tierwise eval judge``)."""
    return _judge_request(env, model, system, prompt, _PAIRWISE)


def read_pairwise_verdict(env: GraderEnv, model: str, reply: ChatResponse) -> ParsedPairwise:
    """A pairwise judge reply read exactly as :class:`JudgePairwiseGrader` reads it."""
    return _read_pairwise(reply, _structured(env, model))
