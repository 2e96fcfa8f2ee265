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

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import dataclasses as pydantic_dataclasses

from router.errors import InvalidInput, field_path
from router.policy import ClassOverride
from router.pricing import Usage
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

Verdict = Literal["agree", "disagree", "invalid", "refused"]


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class RecordedJudge:
    """A recorded judge verdict: the judge model, its prompt's template name and full text (null
    where not recorded, e.g. an exported grade), its reply (the explanation), the score (1-10
    for a rating judge; a JSON integer loads as a float; null without one) and, optionally, the
    verdict it was stored with (``agree`` | ``disagree`` | ``invalid`` | ``refused``)."""

    model: str
    prompt_name: str | None
    user_prompt: str | None
    judgment: str
    score: float | None
    verdict: Verdict | None = None


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class RecordedUsage:
    """The provider's token counts of one recorded answer (tokens; cached and cache-write
    input are part of ``input_tokens``' bill at their own prices, see :mod:`router.pricing`)."""

    input_tokens: Annotated[int, Field(ge=0)]
    output_tokens: Annotated[int, Field(ge=0)]
    cached_input_tokens: Annotated[int, Field(ge=0)] = 0
    cache_write_tokens: Annotated[int, Field(ge=0)] = 0

    def as_usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class RecordedOutput:
    """One model's recorded answer to an item. Every key is optional (missing = null): ``text``
    (None where only correctness was recorded), ``correct`` (against the gold answer),
    ``judge`` (a recorded judge verdict), ``usage`` (provider token counts; None = estimate
    from the text) and ``human`` (a person's label: the answer is acceptable or not)."""

    text: str | None = None
    correct: bool | None = None
    judge: RecordedJudge | None = None
    usage: RecordedUsage | None = None
    human: bool | None = None


@pydantic_dataclasses.dataclass(frozen=True, slots=True, config=LINE_CONFIG)
class HeldOutItem:
    """One held-out input with its reference and recorded outputs (keyed by model name): one line
    of a held-out file. ``id``, ``dataset``, ``task_type`` and ``messages`` are required;
    ``reference_answer``, ``gold`` and ``outputs`` are optional (missing = null / none)."""

    id: str
    dataset: str
    task_type: str
    messages: Annotated[list[Message], Field(min_length=1)]
    reference_answer: str | None = None
    gold: str | None = None
    outputs: dict[str, RecordedOutput] = field(default_factory=dict)
    # For multi-turn items: the reference answer of every turn up to this one (MT-Bench math).
    # Not part of a line: load_held_out fills it in from the other items of the set.
    reference_turns: list[str] = field(default_factory=list, init=False)


@dataclass(frozen=True)
class HeldOutSet:
    """A loaded held-out set. ``graders``: the set's grader spec per task type, from its
    manifest entry (:func:`manifest_entry`), in file order (a later match overrides)."""

    name: str
    path: Path
    items: list[HeldOutItem]
    graders: tuple[ClassOverride, ...] = ()

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
    graders = grader_spec(manifest_entry(p), p.parent / MANIFEST)
    return HeldOutSet(name=items[0].dataset, path=p, items=items, graders=graders)


MANIFEST = "manifest.json"
"""The manifest's file name: one per folder of data files (format: ``datasets/README.md``)."""


def manifest_entry(path: Path) -> dict[str, Any] | None:
    """The entry of ``manifest.json`` beside ``path`` whose ``file`` is ``path``'s name; None
    when there is no manifest there or it does not list the file.

    Raises:
        InvalidInput: the manifest is not a JSON list of objects (``field="manifest"``).
    """
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return None
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{manifest}: not a readable JSON manifest: {exc}"
        raise InvalidInput(msg, field="manifest") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidInput(f"{manifest}: a manifest is a JSON list of objects", field="manifest")
    return next((e for e in entries if e.get("file") == path.name), None)


def grader_spec(entry: dict[str, Any] | None, manifest: Path) -> tuple[ClassOverride, ...]:
    """The ``graders`` of a manifest entry: a list of ``{"match": <glob of task types>,
    <class setting>: <value>, ...}`` (the keys of a policy's ``[[classes]]``), validated.

    Raises:
        InvalidInput: not a list of such objects, or an unknown or invalid setting
            (``field="graders[<i>]"``).
    """
    raw = (entry or {}).get("graders")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput(f"{manifest}: graders: must be a list", field="graders")
    spec: list[ClassOverride] = []
    for i, one in enumerate(raw):
        try:
            spec.append(ClassOverride.model_validate(one))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = field_path(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise InvalidInput(
                f"{manifest}: graders[{i}]{'.' + where if where else ''}: {msg}",
                field=f"graders[{i}]",
            ) from exc
    return tuple(spec)


@dataclass(frozen=True)
class HeldOutScan:
    """What :func:`scan_held_out` made of one file: the set of its good lines (None when
    refused or when no line was good), every bad line's error (each names the file and the
    line), and ``refused``: why the file is not a held-out set at all."""

    path: Path
    held_out: HeldOutSet | None
    errors: list[InvalidInput]
    refused: InvalidInput | None = None


_ITEM_KEYS = frozenset({"messages", "task_type"})


def _refuse(path: Path, why: str) -> HeldOutScan:
    msg = f"{path}: not a held-out set: {why}"
    return HeldOutScan(path, None, [], InvalidInput(msg, field="dataset"))


def scan_held_out(path: str | Path) -> HeldOutScan:
    """Load a held-out JSONL file line by line, keeping every good line and reporting every
    bad one (``"<file> line <n>: <field path>: <problem>"``, as :func:`load_held_out` raises,
    plus duplicate ids), so one bad line costs one item, not the run. The grader spec comes
    from the manifest beside the file (:func:`manifest_entry`).

    A file that is not a held-out set is refused whole (``refused``, one line naming it): the
    manifest lists it with another ``kind``, or its first line is a JSON object with neither
    ``messages`` nor ``task_type`` (a prompt-template or intent file matched by a glob), or it
    cannot be read. Never raises for the file's content.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        return _refuse(p, f"cannot read it: {exc.strerror}")
    try:
        entry = manifest_entry(p)
        graders = grader_spec(entry, p.parent / MANIFEST)
    except InvalidInput as exc:
        return HeldOutScan(p, None, [], exc)
    if entry is not None and entry.get("kind") != "held_out":
        return _refuse(p, f"its manifest entry says kind {entry.get('kind')!r}, not 'held_out'")
    items: list[HeldOutItem] = []
    errors: list[InvalidInput] = []
    first_line: dict[str, int] = {}
    checked_kind = False
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(InvalidInput(f"{p} line {lineno}: not UTF-8 text", field="line"))
            continue
        if not line.strip():
            continue
        if not checked_kind:
            checked_kind = True
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                first = None
            if isinstance(first, dict) and not _ITEM_KEYS & set(first):
                keys = ", ".join(sorted(first)[:6]) or "none"
                why = f"its first line has neither 'messages' nor 'task_type' (keys: {keys})"
                return _refuse(p, why)
        try:
            item = _ITEM.validate_json(line)
        except ValidationError as exc:
            errors.append(_line_error(p, lineno, exc))
            continue
        if item.id in first_line:
            errors.append(
                InvalidInput(
                    f"{p} line {lineno}: id: duplicate item id '{item.id}'"
                    f" (first on line {first_line[item.id]})",
                    field="id",
                )
            )
            continue
        first_line[item.id] = lineno
        items.append(item)
    if not items:
        if not errors:
            return HeldOutScan(p, None, [], InvalidInput(f"{p}: no items", field="dataset"))
        return HeldOutScan(p, None, errors)
    _attach_reference_turns(items)
    return HeldOutScan(p, HeldOutSet(items[0].dataset, p, items, graders), errors)


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
                if out.judge is not None and out.judge.user_prompt is not None:
                    judgments.append(RecordedJudgment(out.judge.user_prompt, out.judge.judgment))
    return ReplayProvider(answers, judgments)
