"""Loaders for the held-out sets in ``datasets/`` (format: ``datasets/README.md``).

A held-out set is JSONL, one item a line: an input (``messages``), optional reference answer and
gold answer, and per model the recorded output text, correctness and judge verdict. Loading
validates every line and names file and line on error; nothing is fetched from the network.

Each line shape is declared once, as the pydantic dataclass or model it loads into, with
:data:`LINE_CONFIG`: strict types (``"true"`` is not a boolean, ``1`` is not a string) and no
unknown keys. :func:`read_rows` validates a file line by line and turns the first bad line into
one :class:`~router.errors.InvalidInput` naming the file, the line and the field path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import dataclasses as pydantic_dataclasses

from router.errors import InvalidInput, field_path
from router.providers import RecordedAnswer, RecordedJudgment, ReplayProvider

T = TypeVar("T")

LINE_CONFIG = ConfigDict(extra="forbid", strict=True)
"""Pydantic config of every JSONL line shape: an unknown key or a value of another JSON type
(no coercion) is an error."""


def _message(message: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(message.get("role"), str):
        raise ValueError("a message needs a string 'role'")
    return message


Message = Annotated[dict[str, Any], AfterValidator(_message)]
"""An OpenAI-style chat message, kept as the decoded dict: a string ``role``, anything else."""


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class RecordedJudge:
    """A recorded judge verdict: the judge's prompt name, its full prompt and reply, the score
    (1-10; a JSON integer loads as a float)."""

    model: str
    prompt_name: str
    user_prompt: str
    judgment: str
    score: float


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class RecordedOutput:
    """One model's recorded answer to an item; ``text`` is None where only correctness exists."""

    text: str | None
    correct: bool | None
    judge: RecordedJudge | None


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class HeldOutItem:
    """One held-out input with its reference and recorded outputs (keyed by model name): one line
    of a held-out file, every key required (``null`` where the README allows it)."""

    id: str
    dataset: str
    task_type: str
    messages: Annotated[list[Message], Field(min_length=1)]
    reference_answer: str | None
    gold: str | None
    outputs: dict[str, RecordedOutput]
    # For multi-turn items: the reference answer of every turn up to this one (MT-Bench math).
    # Not part of a line: load_held_out fills it in from the other items of the set.
    reference_turns: list[str] = field(default_factory=list, init=False)


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


class JudgePrompt(BaseModel):
    """One line of ``judge_prompts.jsonl``: a FastChat judge template (fields in file order)."""

    model_config = LINE_CONFIG

    category: str
    description: str
    name: str
    output_format: str
    prompt_template: str
    system_prompt: str
    type: str


_ITEM: TypeAdapter[HeldOutItem] = TypeAdapter(HeldOutItem)
_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_JUDGE_PROMPT: TypeAdapter[JudgePrompt] = TypeAdapter(JudgePrompt)
_WHOLE_ROW = {"dataclass_type", "model_type", "model_attributes_type", "dict_type"}


def _line_error(path: Path, lineno: int, exc: ValidationError) -> InvalidInput:
    """``<file> line <n>: <field path>: <problem>`` for the first error of ``exc``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = f"{path} line {lineno}"
    if first["type"] == "json_invalid":
        detail = str(first.get("ctx", {}).get("error", first["msg"]))
        detail = detail.replace(" at line 1 column ", " at column ")
        return InvalidInput(f"{where}: not JSON: {detail}", field="line")
    loc = field_path(first["loc"])
    if first["type"] in _WHOLE_ROW and not loc:
        return InvalidInput(f"{where}: a line must be a JSON object", field="line")
    if first["type"] == "unexpected_keyword_argument":  # a dataclass's word for extra_forbidden
        msg = "Extra inputs are not permitted"
    else:
        msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidInput(f"{where}: {loc + ': ' if loc else ''}{msg}{more}", field=loc or "line")


def read_rows(path: Path, shape: TypeAdapter[T]) -> Iterator[tuple[int, T]]:
    """(line number, row) for each non-blank line of the JSONL file ``path``, each line parsed
    and validated as ``shape`` in one step. Line numbers are 1-based and count the blank lines,
    which are skipped.

    Raises:
        InvalidInput: the file cannot be read (``field="dataset"``), is not UTF-8 or has a line
            that is not JSON or not an object (``field="line"``), or a line does not fit
            ``shape``: ``"<file> line <n>: <field path>: <problem>"``, ``field`` the path, e.g.
            ``outputs.gpt-4.correct`` or ``messages[0]``. The first bad line stops the read.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read data set {path}: {exc.strerror}", field="dataset") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"{path} line {lineno}: not UTF-8 text", field="line") from exc
    # Split on "\n" only: U+2028 and friends may stand unescaped inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = shape.validate_json(line)
        except ValidationError as exc:
            raise _line_error(path, lineno, exc) from exc
        yield lineno, row


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, decoded object) for each non-blank line of a JSONL file, unchecked beyond
    being a JSON object; prefer :func:`read_rows` with a line shape.

    Raises:
        InvalidInput: as :func:`read_rows` (unreadable, not UTF-8, not a JSON object).
    """
    return read_rows(path, _OBJECT)


def _attach_reference_turns(items: list[HeldOutItem]) -> None:
    """Set, for multi-turn items ``<dataset>/<q>/<turn>``, the references of turns 1..turn (all
    present, else none)."""
    by_id = {i.id: i for i in items}
    for item in items:
        head, _, turn = item.id.rpartition("/")
        # Only a conversation's turn ids (<dataset>/<q>/<turn>), never a flat <dataset>/<n>:
        # gsm8k/1318 is question 1318, not turn 1318 of a conversation.
        if not (turn.isdigit() and "/" in head):
            continue
        turns: list[str] = []
        for t in range(1, int(turn) + 1):
            ref = by_id.get(f"{head}/{t}")
            if ref is None or ref.reference_answer is None:
                break
            turns.append(ref.reference_answer)
        else:
            if turns:  # init=False field of a frozen dataclass: set once, right after loading
                object.__setattr__(item, "reference_turns", turns)


def load_held_out(path: str | Path) -> HeldOutSet:
    """Load and validate a held-out JSONL file (one :class:`HeldOutItem` a line); the set's
    ``name`` is the first item's ``dataset``.

    Raises:
        InvalidInput: unreadable file, a line that is not JSON, a missing, unknown or mistyped
            field (``"<file> line <n>: <field path>: <problem>"``, ``field`` = the path), a
            duplicate item id (``field="id"``), or an empty file (``field="dataset"``).
    """
    p = Path(path)
    items: list[HeldOutItem] = []
    first_line: dict[str, int] = {}
    for lineno, item in read_rows(p, _ITEM):
        if item.id in first_line:
            raise InvalidInput(
                f"{p} line {lineno}: id: duplicate item id '{item.id}'"
                f" (first on line {first_line[item.id]})",
                field="id",
            )
        first_line[item.id] = lineno
        items.append(item)
    if not items:
        raise InvalidInput(f"{p}: no items", field="dataset")
    _attach_reference_turns(items)
    return HeldOutSet(name=items[0].dataset, path=p, items=items)


def load_judge_prompts(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """MT-Bench judge prompt templates by name (``single-v1``, ``single-math-v1``, ...): each a
    dict with the :class:`JudgePrompt` fields ``name``, ``type``, ``system_prompt``,
    ``prompt_template``, ``output_format``, ``description``, ``category`` (all strings).

    ``path``: a JSONL file of templates; default the 8 FastChat templates shipped with the
    graders as package data (``evaluator/graders/judge_prompts.jsonl``, format and licence in
    ``datasets/README.md``), so grading needs no data folder.

    Raises:
        InvalidInput: unreadable file, a line that is not JSON, or a missing, unknown or
            mistyped field (names file, line and field).
    """
    if path is not None:
        return {p.name: p.model_dump() for _, p in read_rows(Path(path), _JUDGE_PROMPT)}
    shipped = resources.files("evaluator.graders").joinpath("judge_prompts.jsonl")
    with resources.as_file(shipped) as file:
        return {p.name: p.model_dump() for _, p in read_rows(file, _JUDGE_PROMPT)}


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
