"""``tierwise eval DATASET... --models A,B``: every candidate model answers every item, the
configured grader grades each answer against the reference model, and the results go to an
append-only log (:mod:`evaluator.evaluation._results`) that a later run resumes from.

Answers come from the set's recordings (the default: the recorded text, correctness, usage and
judge verdict of that model) or, with ``live``, from the provider registry (each model's own
provider, with the catalog's ``api_model``). Grading runs the configured grader's stages
(:meth:`evaluator.graders.Grader.step`); the reference model's own answer to the item is handed
to the grader as its ``reference`` answer, so it is asked (and paid) once per item however many
candidates there are, and a recorded judge verdict of a recorded answer is the ``judge`` answer
of ``judge_single``. Any other call goes to ``grading_provider`` (the recordings' replay
provider, or the live registry).

A class's grader settings: the policy's ``[defaults]``, overlaid with the set's grader spec for
that task type (its manifest's ``graders``), overlaid with the policy's own ``[[classes]]``
entries that match: a policy that names a grader for a class wins over the set's.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from evaluator.datasets import HeldOutItem, HeldOutSet, index_items, load_judge_prompts
from evaluator.evaluation._results import Answer, Grade, ResultsLog
from evaluator.graders import COMPARERS, GRADERS, GraderEnv, GradeResult, SampleView, add_usage
from router.errors import InvalidInput, field_path
from router.policy import ClassSettings, Policy
from router.pricing import Usage, cost_nusd
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Provider,
    ProviderError,
)
from router.tokens import estimate_message_tokens, estimate_text_tokens

GRADING_FIELDS = (
    "grader",
    "pass_mark",
    "compare",
    "numeric_tolerance",
    "numeric_abs_tolerance",
    "labels",
    "synonyms",
    "json_fields",
    "choice_letters",
)
"""The class settings a grade depends on (with the reference model): its fingerprint."""

ANSWER_MAX_TOKENS = 1024
"""``max_tokens`` of a candidate's live answer."""


def class_settings(policy: Policy, held_out: HeldOutSet, task_type: str) -> ClassSettings:
    """The grader settings of ``task_type`` in an eval (module doc: policy defaults, then the
    set's grader spec, then the policy's matching ``[[classes]]``).

    Raises:
        InvalidInput: the merged settings are invalid (names the setting).
    """
    merged = policy.spec.defaults.model_dump()
    for spec in held_out.graders:
        if fnmatch.fnmatchcase(task_type, spec.match):
            merged.update(spec.overrides)
    for override in policy.spec.classes:
        if fnmatch.fnmatchcase(task_type, override.match):
            merged.update(override.overrides)
    try:
        return ClassSettings(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = field_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidInput(
            f"{held_out.path}: class {task_type}: {where + ': ' if where else ''}{msg}",
            field=where or "graders",
        ) from exc


def grading_key(reference: str, settings: ClassSettings) -> str:
    """The fingerprint of how an answer is graded: the reference model and
    :data:`GRADING_FIELDS` (16 hex digits of a SHA-256)."""
    dumped = settings.model_dump(include=set(GRADING_FIELDS))
    blob = json.dumps([reference, dumped], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def gold_correct(item: HeldOutItem, text: str | None, settings: ClassSettings) -> bool | None:
    """Whether ``text`` gives the item's ``gold`` answer, by the comparer the class's grader
    uses (``numeric``, ``choice``, ``label``, ``exact``, ``json_fields``; ``reference_answer``:
    its ``compare``); None without a gold answer, a text, or a comparer (judge graders)."""
    if item.gold is None or text is None:
        return None
    name = settings.compare if settings.grader == "reference_answer" else settings.grader
    comparer = COMPARERS.get(name)
    if comparer is None:
        return None
    try:
        result = comparer(item.gold, text, settings)
    except ValueError:
        return None
    if result.verdict not in ("agree", "disagree"):
        return None
    return result.verdict == "agree"


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that failed in this run (not logged: a resumed run tries it again)."""

    item: str
    model: str
    stage: str
    message: str


@dataclass
class EvalRun:
    """What one run did: counts of answers and grades made now (``live_calls`` of them went to a
    provider) and taken from the log, and the failures."""

    answered: int = 0
    graded: int = 0
    resumed_answers: int = 0
    resumed_grades: int = 0
    live_calls: int = 0
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class EvalSpec:
    """What to run: the sets, the models (the reference among them), the policy (catalog and
    class settings), recorded or live answers, and the bound on calls in flight."""

    sets: Sequence[HeldOutSet]
    models: Sequence[str]
    reference: str
    policy: Policy
    live: bool = False
    concurrency: int = 8

    def settings_by_class(self) -> dict[str, ClassSettings]:
        """Every task type's :func:`class_settings`.

        Raises:
            InvalidInput: as :func:`class_settings`.
        """
        out: dict[str, ClassSettings] = {}
        for held_out in self.sets:
            for task_type in held_out.task_types:
                out.setdefault(task_type, class_settings(self.policy, held_out, task_type))
        return out


def _estimated(item: HeldOutItem, text: str | None) -> Usage:
    # Correctness-only recordings (MMLU) answered with one letter: one output token.
    output = estimate_text_tokens(text) if text is not None else 1
    return Usage(input_tokens=estimate_message_tokens(item.messages), output_tokens=output)


class _Runner:
    def __init__(
        self,
        spec: EvalSpec,
        log: ResultsLog,
        answer_provider: Callable[[str], Provider] | None,
        grading_provider: Callable[[str], Provider],
        run: EvalRun,
    ) -> None:
        self.spec = spec
        self.log = log
        self.answer_provider = answer_provider
        self.grading_provider = grading_provider
        self.run = run
        self.gate = asyncio.Semaphore(spec.concurrency)
        self.settings = spec.settings_by_class()
        self.env = GraderEnv(
            provider_for=grading_provider,
            items=index_items(spec.sets),
            judge_prompts=load_judge_prompts(),
        )
        self.prices = spec.policy.prices

    def cost(self, model: str, usage: Usage) -> int | None:
        return cost_nusd(usage, self.prices.get(model))

    async def call(self, provider: Provider, request: ChatRequest) -> ChatResponse:
        async with self.gate:
            reply = await provider.complete(request)
        self.run.live_calls += 1
        return reply

    async def answer(self, item: HeldOutItem, model: str) -> Answer | None:
        done = self.log.answers.get((item.id, model))
        if done is not None:
            self.run.resumed_answers += 1
            return done
        settings = self.settings[item.task_type]
        if self.answer_provider is None:
            recorded = item.outputs.get(model)
            if recorded is None:
                self.fail(item, model, "answer", f"no recorded output of {model}")
                return None
            usage = recorded.usage.as_usage() if recorded.usage is not None else None
            correct = recorded.correct
            if correct is None:
                correct = gold_correct(item, recorded.text, settings)
            answer = Answer(
                item=item.id,
                model=model,
                source="recorded",
                text=recorded.text,
                finish_reason="stop",
                usage=usage or _estimated(item, recorded.text),
                usage_estimated=usage is None,
                cost_nusd=self.cost(model, usage or _estimated(item, recorded.text)),
                correct=correct,
            )
            self.log.add_answer(answer, paid=False)
        else:
            request = ChatRequest(model=model, messages=item.messages, max_tokens=ANSWER_MAX_TOKENS)
            try:
                reply = await self.call(self.answer_provider(model), request)
            except ProviderError as exc:
                self.fail(item, model, "answer", exc.message)
                return None
            answer = Answer(
                item=item.id,
                model=model,
                source="live",
                text=reply.text,
                finish_reason=reply.finish_reason,
                usage=reply.usage,
                usage_estimated=False,
                cost_nusd=self.cost(model, reply.usage),
                correct=gold_correct(item, reply.text, settings),
            )
            self.log.add_answer(answer, paid=True)
        self.run.answered += 1
        return answer

    def fail(self, item: HeldOutItem, model: str, stage: str, message: str) -> None:
        self.run.failures.append(Failure(item.id, model, stage, message))

    async def grade(self, item: HeldOutItem, answer: Answer, reference: Answer | None) -> None:
        settings = self.settings[item.task_type]
        key = grading_key(self.spec.reference, settings)
        if (item.id, answer.model, key) in self.log.grades:
            self.run.resumed_grades += 1
            return
        grader = GRADERS[settings.grader]
        sample = SampleView(
            decision_id=f"eval:{item.id}:{answer.model}",
            task_class=item.task_type,
            model=answer.model,
            input_messages=item.messages,
            output_text=answer.text or "",
            item_id=item.id,
        )
        answers: dict[str, ChatResponse] = {}
        if reference is not None and reference.text is not None:
            # Already paid for as the reference model's own answer: no grading usage.
            answers["reference"] = ChatResponse(
                reference.text, self.spec.reference, _finish(reference.finish_reason), Usage()
            )
        recorded = item.outputs.get(answer.model)
        prefilled: list[Usage] = []
        if (
            answer.source == "recorded"
            and recorded is not None
            and recorded.judge is not None
            and settings.grader == "judge_single"
        ):
            judge = recorded.judge
            answers["judge"] = ChatResponse(
                judge.judgment,
                judge.model,
                "stop",
                Usage(
                    input_tokens=estimate_text_tokens(judge.user_prompt or ""),
                    output_tokens=estimate_text_tokens(judge.judgment),
                ),
            )
            prefilled.append(answers["judge"].usage)
        paid = False
        spent: list[Usage] = []
        while True:
            nxt = grader.step(sample, settings, self.spec.reference, self.env, answers)
            if isinstance(nxt, GradeResult):
                break
            keys = [k for k in nxt.requests if k not in answers]
            if not keys:
                self.fail(item, answer.model, "grade", f"grader {grader.name} asked again")
                return
            try:
                replies = await asyncio.gather(
                    *(
                        self.call(self.grading_provider(nxt.requests[k].model), nxt.requests[k])
                        for k in keys
                    )
                )
            except ProviderError as exc:
                self.fail(item, answer.model, "grade", exc.message)
                return
            paid = paid or self.spec.live
            answers.update(zip(keys, replies, strict=True))
            spent.extend(r.usage for r in replies)
        usage = add_usage(*spent, *prefilled)
        grade = Grade(
            item=item.id,
            model=answer.model,
            grading=key,
            verdict=nxt.verdict,
            parse_status=nxt.parse_status,
            score=nxt.score,
            raw_output=nxt.raw_output,
            usage=usage,
            cost_nusd=self.cost(self.spec.reference, usage),
        )
        self.log.add_grade(grade, paid=paid)
        self.run.graded += 1

    async def item(self, item: HeldOutItem) -> None:
        reference = await self.answer(item, self.spec.reference)
        others = [m for m in self.spec.models if m != self.spec.reference]
        got = await asyncio.gather(*(self.answer(item, m) for m in others))
        graded = [a for a in [reference, *got] if a is not None]
        await asyncio.gather(*(self.grade(item, a, reference) for a in graded))


def _finish(reason: str) -> FinishReason:
    if reason == "length":
        return "length"
    if reason == "refusal":
        return "refusal"
    return "other" if reason == "other" else "stop"


async def run_eval(
    spec: EvalSpec,
    log: ResultsLog,
    *,
    answer_provider: Callable[[str], Provider] | None,
    grading_provider: Callable[[str], Provider],
    on_item: Callable[[], None] | None = None,
) -> EvalRun:
    """Answer and grade every item of ``spec.sets`` with every model, ``spec.concurrency``
    items (and provider calls) at a time; whatever ``log`` already holds is taken from it.
    ``answer_provider`` None answers from the recordings; else it gives each model's provider
    (live). ``on_item`` is called as each item is done (progress).

    Raises:
        InvalidInput: the class settings are invalid, or the reference model is not in the
            policy's catalog.
    """
    if spec.reference not in spec.policy.prices:
        raise InvalidInput(
            f"reference model '{spec.reference}' is not in the catalog of policy "
            f"{spec.policy.name}",
            field="reference",
        )
    run = EvalRun()
    runner = _Runner(spec, log, answer_provider, grading_provider, run)
    queue: asyncio.Queue[HeldOutItem] = asyncio.Queue()
    for held_out in spec.sets:
        for item in held_out.items:
            queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await runner.item(item)
            if on_item is not None:
                on_item()

    try:
        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    finally:
        log.sync()
    return run


__all__ = [
    "EvalRun",
    "EvalSpec",
    "Failure",
    "class_settings",
    "gold_correct",
    "grading_key",
    "run_eval",
]
