"""The grader interface: what a grader sees, what it returns, and what it may use."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evaluator.datasets import HeldOutItem
from router.policy import ClassSettings
from router.pricing import Usage
from router.providers.base import ChatRequest, ChatResponse, Provider


@dataclass(frozen=True, slots=True)
class SampleView:
    """What a grader sees of a sample: the conversation, the graded answer, and the held-out item
    the request replays (None for live traffic). Never the caller's metadata."""

    decision_id: str
    task_class: str
    model: str
    input_messages: list[dict[str, Any]]
    output_text: str
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class GradeResult:
    """A verdict with the raw text it came from and the tokens spent getting it.

    ``verdict``: ``agree`` | ``disagree`` | ``invalid`` | ``refused``. ``parse_status`` is ``ok``
    for a clean verdict (``ok_structured`` when a judge gave it through a JSON schema),
    ``position_flip`` for a pairwise judge whose two orders disagreed
    (position bias, stored as a tie), else the reason there is no verdict (``truncated``,
    ``empty``, ``refused``, ``no_rating``, ...; at most 32 characters). ``score``: the rating
    (judge_single, 1-10), the win credit (judge_pairwise: 1 cheap better, 0.5 tie, 0 reference
    better), the fraction of JSON fields equal (json_fields) or the graded number (numeric).
    ``usage`` sums every reference call made for this grade (tokens).
    """

    verdict: str
    parse_status: str
    raw_output: str = ""
    score: float | None = None
    usage: Usage = field(default_factory=Usage)
    position_flip: bool | None = None


@dataclass(frozen=True)
class GraderEnv:
    """What graders may use: the reference model's provider, held-out items by id, judge
    prompt templates by name (MT-Bench ``judge_prompts.jsonl``)."""

    provider_for: Callable[[str], Provider]
    items: Mapping[str, HeldOutItem]
    judge_prompts: Mapping[str, Mapping[str, Any]]

    def item_of(self, sample: SampleView) -> HeldOutItem | None:
        return self.items.get(sample.item_id) if sample.item_id is not None else None


@dataclass(frozen=True, slots=True)
class Stage:
    """The provider calls a grade needs next, by key (``"reference"``, ``"judge"``,
    ``"judge_A"`` ...). Each request names its model by catalog name; the calls of one stage
    are independent of each other and may run concurrently or go into one provider batch."""

    requests: Mapping[str, ChatRequest]


Answers = Mapping[str, ChatResponse]
"""The replies of every stage so far, by request key."""


class Grader(abc.ABC):
    """Base class: subclasses set ``name`` (the ``grader`` class setting) and implement
    :meth:`step`, which either states the next :class:`Stage` of provider calls or turns the
    answers into a verdict. Graders never call providers and never write to the database:
    the real-time job runs the stages back to back (:meth:`grade`); batch grading submits each
    stage through a provider's batch API and calls :meth:`step` again when the results are in.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def step(
        self,
        sample: SampleView,
        settings: ClassSettings,
        reference_model: str,
        env: GraderEnv,
        answers: Answers,
    ) -> Stage | GradeResult:
        """The next stage of calls for grading ``sample`` against ``reference_model`` given
        ``answers`` (empty at first), or the grade once they suffice. Pure: no I/O (``env`` is
        read only for templates, held-out items and whether a provider answers through a JSON
        schema). A grade's ``usage`` sums every answer it used (tokens)."""

    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        """Grade in real time: each stage's calls concurrently, stages back to back.

        Raises:
            ProviderError: a call failed (the job decides whether to retry).
        """
        answers: dict[str, ChatResponse] = {}
        while True:
            nxt = self.step(sample, settings, reference_model, env, answers)
            if isinstance(nxt, GradeResult):
                return nxt
            keys = [k for k in nxt.requests if k not in answers]
            if not keys:
                raise RuntimeError(f"grader {self.name} asked again for answers it has")
            replies = await asyncio.gather(
                *(env.provider_for(nxt.requests[k].model).complete(nxt.requests[k]) for k in keys)
            )
            answers.update(zip(keys, replies, strict=True))


def add_usage(*usages: Usage) -> Usage:
    """Token counts of several calls added up."""
    return Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        cached_input_tokens=sum(u.cached_input_tokens for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
    )


def answer_request(sample: SampleView, model: str, *, max_tokens: int = 1024) -> ChatRequest:
    """``model``'s own answer to the sample's conversation (a reference answer, or the cheaper
    model's answer in a shadow probe)."""
    return ChatRequest(model=model, messages=sample.input_messages, max_tokens=max_tokens)


def no_verdict(status: str, raw: str, usage: Usage) -> GradeResult:
    """A grade without a verdict: ``refused`` when the status says so, else ``invalid``."""
    verdict = "refused" if status.endswith("refused") else "invalid"
    return GradeResult(verdict, status, raw, usage=usage)
