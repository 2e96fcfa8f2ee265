"""Loaders for the held-out sets in ``datasets/`` (format: ``datasets/README.md``).

A held-out set is JSONL, one item a line: an input (``messages``), optional reference answer and
gold answer, and per model the recorded output text, correctness and judge verdict. Loading
validates every line and names file and line on error; nothing is fetched from the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from router.errors import InvalidInput
from router.providers import RecordedAnswer, RecordedJudgment, ReplayProvider


@dataclass(frozen=True, slots=True)
class RecordedJudge:
    """A recorded judge verdict: the judge's prompt name, its full prompt and reply, the score."""

    model: str
    prompt_name: str
    user_prompt: str
    judgment: str
    score: float


@dataclass(frozen=True, slots=True)
class RecordedOutput:
    """One model's recorded answer to an item; ``text`` is None where only correctness exists."""

    text: str | None
    correct: bool | None
    judge: RecordedJudge | None


@dataclass(frozen=True, slots=True)
class HeldOutItem:
    """One held-out input with its reference and recorded outputs (keyed by model name)."""

    id: str
    dataset: str
    task_type: str
    messages: list[dict[str, Any]]
    reference_answer: str | None
    gold: str | None
    outputs: dict[str, RecordedOutput]
    # For multi-turn items: the reference answer of every turn up to this one (MT-Bench math).
    reference_turns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HeldOutSet:
    """A loaded held-out set."""

    name: str
    path: Path
    items: list[HeldOutItem]

    @property
    def task_types(self) -> list[str]:
        return sorted({i.task_type for i in self.items})

    def by_task_type(self) -> dict[str, list[HeldOutItem]]:
        groups: dict[str, list[HeldOutItem]] = {}
        for item in self.items:
            groups.setdefault(item.task_type, []).append(item)
        return groups


def _req(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise InvalidInput(f"{where}: missing field '{key}'", field=key)
    value = obj[key]
    if not isinstance(value, kind):
        raise InvalidInput(f"{where}: field '{key}' has the wrong type", field=key)
    return value


def _output(raw: Any, where: str) -> RecordedOutput:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: an output must be an object", field="outputs")
    judge_raw = raw.get("judge")
    judge = None
    if judge_raw is not None:
        judge = RecordedJudge(
            model=_req(judge_raw, "model", str, where),
            prompt_name=_req(judge_raw, "prompt_name", str, where),
            user_prompt=_req(judge_raw, "user_prompt", str, where),
            judgment=_req(judge_raw, "judgment", str, where),
            score=float(_req(judge_raw, "score", (int, float), where)),
        )
    text = raw.get("text")
    correct = raw.get("correct")
    if text is not None and not isinstance(text, str):
        raise InvalidInput(f"{where}: outputs.text must be a string or null", field="text")
    if correct is not None and not isinstance(correct, bool):
        raise InvalidInput(f"{where}: outputs.correct must be a boolean or null", field="correct")
    return RecordedOutput(text=text, correct=correct, judge=judge)


def parse_item(obj: Any, where: str) -> HeldOutItem:
    """Validate one decoded JSONL line. Raises InvalidInput naming ``where`` and the field."""
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: a line must be a JSON object", field="line")
    outputs = _req(obj, "outputs", dict, where)
    messages = _req(obj, "messages", list, where)
    if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidInput(
            f"{where}: messages must be a non-empty list of messages", field="messages"
        )
    return HeldOutItem(
        id=_req(obj, "id", str, where),
        dataset=_req(obj, "dataset", str, where),
        task_type=_req(obj, "task_type", str, where),
        messages=messages,
        reference_answer=obj.get("reference_answer"),
        gold=obj.get("gold"),
        outputs={str(m): _output(o, f"{where} outputs.{m}") for m, o in outputs.items()},
    )


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object) for each non-blank line of a JSONL file.

    Raises:
        InvalidInput: unreadable file, a line that is not JSON or not UTF-8 (names file:line).
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read data set {path}: {exc.strerror}", field="dataset") from exc
    with handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(
                        f"{path}:{lineno}: not JSON: {exc.msg}", field="line"
                    ) from exc
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path}:{lineno + 1}: not UTF-8 text", field="line") from exc


def _with_reference_turns(items: list[HeldOutItem]) -> list[HeldOutItem]:
    """Attach, for multi-turn items ``<dataset>/<q>/<turn>``, the references of earlier turns."""
    by_id = {i.id: i for i in items}
    out = []
    for item in items:
        head, _, turn = item.id.rpartition("/")
        turns: list[str] = []
        if turn.isdigit() and head:
            for t in range(1, int(turn) + 1):
                ref = by_id.get(f"{head}/{t}")
                if ref is None or ref.reference_answer is None:
                    turns = []
                    break
                turns.append(ref.reference_answer)
        out.append(
            HeldOutItem(
                id=item.id,
                dataset=item.dataset,
                task_type=item.task_type,
                messages=item.messages,
                reference_answer=item.reference_answer,
                gold=item.gold,
                outputs=item.outputs,
                reference_turns=turns,
            )
        )
    return out


def load_held_out(path: str | Path) -> HeldOutSet:
    """Load and validate a held-out JSONL file.

    Raises:
        InvalidInput: unreadable file, a line that is not JSON, a missing or mistyped field,
            a duplicate item id, or an empty file (message names file and line).
    """
    p = Path(path)
    items: list[HeldOutItem] = []
    seen: set[str] = set()
    for lineno, obj in read_jsonl(p):
        item = parse_item(obj, f"{p}:{lineno}")
        if item.id in seen:
            raise InvalidInput(f"{p}:{lineno}: duplicate item id '{item.id}'", field="id")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise InvalidInput(f"{p}: no items", field="dataset")
    name = items[0].dataset
    return HeldOutSet(name=name, path=p, items=_with_reference_turns(items))


def load_judge_prompts(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """MT-Bench judge prompt templates by name (``single-v1``, ``single-math-v1``, ...): each a
    dict with ``name``, ``type``, ``system_prompt``, ``prompt_template``, ``output_format``, ...

    ``path``: a JSONL file of templates; default the 8 FastChat templates shipped with the
    graders as package data (``evaluator/graders/judge_prompts.jsonl``, format and licence in
    ``datasets/README.md``), so grading needs no data folder.

    Raises:
        InvalidInput: unreadable file or a line that is not JSON (names file and line).
    """
    if path is not None:
        return {obj["name"]: obj for _, obj in read_jsonl(Path(path))}
    shipped = resources.files("evaluator.graders").joinpath("judge_prompts.jsonl")
    with resources.as_file(shipped) as file:
        return {obj["name"]: obj for _, obj in read_jsonl(file)}


def index_items(sets: Iterable[HeldOutSet]) -> dict[str, HeldOutItem]:
    """All items of ``sets`` by id."""
    return {item.id: item for s in sets for item in s.items}


def replay_provider(sets: Iterable[HeldOutSet]) -> ReplayProvider:
    """A :class:`~router.providers.ReplayProvider` answering from the sets' recordings: every
    recorded output text (by model and input messages) and every recorded judge prompt."""
    answers: list[RecordedAnswer] = []
    judgments: list[RecordedJudgment] = []
    for held_out in sets:
        for item in held_out.items:
            for model, out in item.outputs.items():
                if out.text is not None:
                    answers.append(RecordedAnswer(model, item.messages, out.text))
                if out.judge is not None:
                    judgments.append(RecordedJudgment(out.judge.user_prompt, out.judge.judgment))
    return ReplayProvider(answers, judgments)
