"""The grader interface: what a grader sees, what it returns, and what it may use."""

from __future__ import annotations

import abc
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
    (field case J3, stored as a tie), else the reason there is no verdict (``truncated``,
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


class Grader(abc.ABC):
    """Base class: subclasses set ``name`` (the ``grader`` class setting) and implement
    :meth:`grade`. Graders never write to the database."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def grade(
        self, sample: SampleView, settings: ClassSettings, reference_model: str, env: GraderEnv
    ) -> GradeResult:
        """Grade one sample against ``reference_model``.

        Raises:
            ProviderError: the reference call failed (the job decides whether to retry).
        """


def add_usage(*usages: Usage) -> Usage:
    """Token counts of several calls added up."""
    return Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        cached_input_tokens=sum(u.cached_input_tokens for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
    )


async def reference_answer(
    sample: SampleView, reference_model: str, env: GraderEnv, *, max_tokens: int = 1024
) -> ChatResponse:
    """The reference model's own answer to the sample's conversation.

    Raises:
        ProviderError: the call failed.
    """
    return await env.provider_for(reference_model).complete(
        ChatRequest(model=reference_model, messages=sample.input_messages, max_tokens=max_tokens)
    )


def no_verdict(status: str, raw: str, usage: Usage) -> GradeResult:
    """A grade without a verdict: ``refused`` when the status says so, else ``invalid``."""
    verdict = "refused" if status.endswith("refused") else "invalid"
    return GradeResult(verdict, status, raw, usage=usage)
