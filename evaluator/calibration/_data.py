"""The judge-calibration data: loading ``llmbar.jsonl`` / ``pandalm.jsonl`` into verdict arrays."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator, BaseModel, TypeAdapter

from evaluator.datasets import LINE_CONFIG, read_rows
from evaluator.parsing import is_refusal
from router.errors import InvalidInput

IntArray = npt.NDArray[np.int64]

INVALID = -1
"""Array code: the judge was asked but gave no usable verdict (invalid or refused)."""
NOT_ASKED = -2
"""Array code: the judge was not asked this order (PandaLM judges saw one order only)."""
NO_CONSENSUS = -1
"""Array code of the human label when annotators tie."""
ORDERS = ("order_12", "order_21")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One recorded verdict: ``value`` 1 | 2 | 0 (tie) or None; ``status`` ``ok`` |
    ``invalid`` (unparseable) | ``refused`` (refusal text or a provider content filter) |
    ``not_asked``."""

    value: int | None
    status: str


@dataclass(frozen=True, slots=True)
class CalibrationItem:
    """One pairwise item: human labels (raw), its subset and class, the judges' verdicts by
    judge name as ``(order_12, order_21)``, and the texts a judge is shown (the instruction
    ``input`` and the two outputs), for measuring a judge live."""

    id: str
    subset: str
    klass: str
    human: tuple[int, ...]
    verdicts: Mapping[str, tuple[Verdict, Verdict]]
    input: str = ""
    output_1: str = ""
    output_2: str = ""


@dataclass(frozen=True)
class CalibrationSet:
    """A loaded judge-calibration set."""

    name: str
    path: Path
    items: list[CalibrationItem]

    @property
    def judges(self) -> list[str]:
        """Judge names in first-seen order."""
        seen: dict[str, None] = {}
        for item in self.items:
            seen.update(dict.fromkeys(item.verdicts))
        return list(seen)


def _code(value: int) -> int:
    if value not in (0, 1, 2):
        raise ValueError("must be 1, 2 or 0 (tie)")
    return value


Code = Annotated[int, AfterValidator(_code)]
"""A label or verdict as recorded: 1 = output_1 better, 2 = output_2 better, 0 = tie."""


class RecordedReplies(BaseModel):
    """``judges.<judge>.raw``: the verbatim recorded reply of each order without a verdict."""

    model_config = LINE_CONFIG

    order_12: dict[str, Any] | None = None
    order_21: dict[str, Any] | None = None


class JudgeVerdicts(BaseModel):
    """``judges.<judge>``: the verdict of each order (None: not recorded or not parseable)."""

    model_config = LINE_CONFIG

    order_12: Code | None
    order_21: Code | None
    raw: RecordedReplies | None = None


class PandaLMMeta(BaseModel):
    """``meta`` of a PandaLM line."""

    model_config = LINE_CONFIG

    idx: int
    motivation_app: str
    cmp_key: str
    instruction: str
    input: str


class CalibrationLine(BaseModel):
    """One line of ``llmbar.jsonl`` / ``pandalm.jsonl`` (format: ``datasets/README.md``)."""

    model_config = LINE_CONFIG

    id: str
    dataset: str
    subset: str
    input: str
    output_1: str
    output_2: str
    human: list[Code]
    judges: dict[str, JudgeVerdicts]
    meta: PandaLMMeta | None = None


_LINE: TypeAdapter[CalibrationLine] = TypeAdapter(CalibrationLine)


def _no_verdict_status(raw: Mapping[str, Any] | None) -> str:
    """``refused`` or ``invalid`` for a recorded reply without a verdict. LLMBar keeps
    ``completion = [text, finish_reason]``; Azure's content filter finishes with "content
    management policy"; PandaLM's gpt-3.5 marks unparseable answers ``garbage``."""
    if raw is not None:
        completion = raw.get("completion")
        if isinstance(completion, list) and len(completion) == 2:
            text, finish = str(completion[0] or ""), str(completion[1] or "")
            if "content management policy" in finish or is_refusal(text):
                return "refused"
    return "invalid"


def _verdict(value: int | None, raw: Mapping[str, Any] | None, asked: bool) -> Verdict:
    if value is not None:
        return Verdict(value, "ok")
    if raw is not None:
        return Verdict(None, _no_verdict_status(raw))
    return Verdict(None, "invalid" if asked else "not_asked")


def load_calibration_set(path: str | Path) -> CalibrationSet:
    """Load ``llmbar.jsonl`` / ``pandalm.jsonl`` (or any file of that format: one
    :class:`CalibrationLine` a line).

    An order counts as asked of a judge when any item has a verdict for it in that order; a
    null verdict in an asked order is ``invalid`` or ``refused`` (from the recorded ``raw``
    reply), else ``not_asked``. ``klass`` is PandaLM's ``meta.motivation_app`` when present,
    else the subset. The set's ``name`` is the first line's ``dataset`` (else the file stem).

    Raises:
        InvalidInput: unreadable file, a line that is not JSON, a missing, unknown or mistyped
            field or a label or verdict that is not 1/2/0 (null for a verdict)
            (``"<file> line <n>: <field path>: <problem>"``, ``field`` = the path), or an empty
            file (``field="dataset"``).
    """
    p = Path(path)
    lines = [line for _, line in read_rows(p, _LINE)]
    if not lines:
        raise InvalidInput(f"{p}: no items", field="dataset")
    asked = _asked_orders(lines)
    items = [_item(line, asked) for line in lines]
    return CalibrationSet(name=lines[0].dataset or p.stem, path=p, items=items)


def _asked_orders(lines: Iterable[CalibrationLine]) -> set[tuple[str, str]]:
    """(judge, order) pairs with at least one recorded verdict."""
    asked: set[tuple[str, str]] = set()
    for line in lines:
        for judge, v in line.judges.items():
            if v.order_12 is not None:
                asked.add((judge, "order_12"))
            if v.order_21 is not None:
                asked.add((judge, "order_21"))
    return asked


def _item(line: CalibrationLine, asked: set[tuple[str, str]]) -> CalibrationItem:
    verdicts = {}
    for judge, v in line.judges.items():
        raw = v.raw or RecordedReplies()
        verdicts[judge] = (
            _verdict(v.order_12, raw.order_12, (judge, "order_12") in asked),
            _verdict(v.order_21, raw.order_21, (judge, "order_21") in asked),
        )
    subset = line.subset or line.dataset
    return CalibrationItem(
        id=line.id,
        subset=subset,
        klass=(line.meta.motivation_app if line.meta else "") or subset,
        human=tuple(line.human),
        verdicts=verdicts,
        input=line.input,
        output_1=line.output_1,
        output_2=line.output_2,
    )


def majority_label(labels: Sequence[int]) -> int | None:
    """The label given most often; None when the top labels tie (or no labels)."""
    ranked = Counter(labels).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def arrays(items: Sequence[CalibrationItem], judge: str) -> tuple[IntArray, IntArray, IntArray]:
    """(human consensus, order_12 verdicts, order_21 verdicts) of ``judge``, int arrays of shape
    (n,), over the items the judge has verdicts for; codes as in :data:`INVALID`,
    :data:`NOT_ASKED`, :data:`NO_CONSENSUS`."""
    human: list[int] = []
    v12: list[int] = []
    v21: list[int] = []
    for item in items:
        pair = item.verdicts.get(judge)
        if pair is None:
            continue
        consensus = majority_label(item.human)
        human.append(NO_CONSENSUS if consensus is None else consensus)
        for out, v in ((v12, pair[0]), (v21, pair[1])):
            out.append(
                v.value
                if v.value is not None
                else NOT_ASKED
                if v.status == "not_asked"
                else INVALID
            )
    return (
        np.asarray(human, dtype=np.int64),
        np.asarray(v12, dtype=np.int64),
        np.asarray(v21, dtype=np.int64),
    )
