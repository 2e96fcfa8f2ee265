"""A judge measured live: every pair of a calibration set put to a model through the provider
registry, in both orders, with the prompt and the reading of ``judge_pairwise`` grading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from evaluator.calibration._data import CalibrationItem, CalibrationSet, Verdict
from evaluator.datasets import load_judge_prompts
from evaluator.graders import (
    GraderEnv,
    JudgePairwiseGrader,
    SampleView,
    add_usage,
    pairwise_judge_request,
    read_pairwise_verdict,
)
from router.pricing import Usage
from router.providers import Provider, ProviderError

# Per order, what the judge's A / B / C mean in the set's codes (1 = output_1 better,
# 2 = output_2 better, 0 = tie): order_12 shows output_1 as A, order_21 shows it as B.
_CODES = {"order_12": {"A": 1, "B": 2, "C": 0}, "order_21": {"A": 2, "B": 1, "C": 0}}


@dataclass
class LiveRun:
    """What a live run spent and how its calls ended: ``calls`` made, ``failed`` (a provider
    error, counted as an invalid verdict), the tokens of every answered call added up
    (``usage``; price it with :func:`router.pricing.cost_nusd`), and the parse statuses."""

    calls: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, usage: Usage, status: str) -> None:
        self.calls += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.usage = add_usage(self.usage, usage)


def _status(parse_status: str) -> str:
    """A parse status as a :class:`Verdict` status: ``refused`` stays, anything else without a
    verdict is ``invalid``."""
    return "refused" if parse_status == "refused" else "invalid"


async def judge_live(
    cal: CalibrationSet,
    judge: str,
    provider_for: Callable[[str], Provider],
    *,
    concurrency: int = 8,
    limit: int | None = None,
    judge_prompts: Mapping[str, Mapping[str, Any]] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[CalibrationSet, LiveRun]:
    """Ask ``judge`` (a catalog model, answered by ``provider_for(judge)``) for a verdict on every
    item of ``cal`` (the first ``limit`` items when set) in both orders: MT-Bench's ``pair-v2``
    prompt with ``input`` as the question and the two outputs as assistants A and B, sent and
    read as :class:`~evaluator.graders.JudgePairwiseGrader` does (a verdict schema where the
    provider supports one). At most ``concurrency`` calls are in flight; ``on_progress(1)`` is
    called as each item completes.

    Returns the items asked, with this judge's verdicts under the name ``judge`` (recorded
    judges dropped), and the run's counts. A provider error on a call makes that order's
    verdict ``invalid`` and is counted in ``LiveRun.failed`` (the first five messages kept):
    one failing call never stops the run.
    """
    prompts = judge_prompts if judge_prompts is not None else load_judge_prompts()
    env = GraderEnv(provider_for=provider_for, items={}, judge_prompts=prompts)
    grader = JudgePairwiseGrader()
    provider = provider_for(judge)
    gate = asyncio.Semaphore(concurrency)
    run = LiveRun()
    items = cal.items if limit is None else cal.items[:limit]

    async def order(item: CalibrationItem, first: str, second: str, name: str) -> Verdict:
        sample = SampleView(
            decision_id=item.id,
            task_class=item.klass,
            model="",
            input_messages=[{"role": "user", "content": item.input}],
            output_text="",
        )
        _, system, prompt = grader.build_prompt(sample, first, second, env)
        request = pairwise_judge_request(env, judge, system, prompt)
        async with gate:
            try:
                reply = await provider.complete(request)
            except ProviderError as exc:
                run.calls += 1
                run.failed += 1
                if len(run.errors) < 5:
                    run.errors.append(f"{item.id} {name}: {exc}")
                return Verdict(None, "invalid")
        parsed = read_pairwise_verdict(env, judge, reply)
        run.add(reply.usage, parsed.status)
        if parsed.winner is None:
            return Verdict(None, _status(parsed.status))
        return Verdict(_CODES[name][parsed.winner], "ok")

    async def one(item: CalibrationItem) -> CalibrationItem:
        v12, v21 = await asyncio.gather(
            order(item, item.output_1, item.output_2, "order_12"),
            order(item, item.output_2, item.output_1, "order_21"),
        )
        if on_progress is not None:
            on_progress(1)
        return replace(item, verdicts={judge: (v12, v21)})

    asked = await asyncio.gather(*(one(item) for item in items))
    return CalibrationSet(name=cal.name, path=cal.path, items=list(asked)), run
