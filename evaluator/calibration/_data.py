"""The judge-calibration data: loading ``llmbar.jsonl`` / ``pandalm.jsonl`` into verdict arrays."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluator.datasets import read_jsonl
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
    judge name as ``(order_12, order_21)``."""

    id: str
    subset: str
    klass: str
    human: tuple[int, ...]
    verdicts: Mapping[str, tuple[Verdict, Verdict]]


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


def _no_verdict_status(raw: Any) -> str:
    """``refused`` or ``invalid`` for a recorded reply without a verdict. LLMBar keeps
    ``completion = [text, finish_reason]``; Azure's content filter finishes with "content
    management policy"; PandaLM's gpt-3.5 marks unparseable answers ``garbage``."""
    if isinstance(raw, Mapping):
        completion = raw.get("completion")
        if isinstance(completion, list) and len(completion) == 2:
            text, finish = str(completion[0] or ""), str(completion[1] or "")
            if "content management policy" in finish or is_refusal(text):
                return "refused"
    return "invalid"


def _verdict(value: Any, raw: Any, asked: bool, where: str) -> Verdict:
    if value is None:
        if raw is not None:
            return Verdict(None, _no_verdict_status(raw))
        return Verdict(None, "invalid" if asked else "not_asked")
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise InvalidInput(f"{where}: a verdict must be 1, 2, 0 or null", field="judges")
    return Verdict(int(value), "ok")


def load_calibration_set(path: str | Path) -> CalibrationSet:
    """Load ``llmbar.jsonl`` / ``pandalm.jsonl`` (or any file of that format).

    An order counts as asked of a judge when any item has a verdict for it in that order; a
    null verdict in an asked order is ``invalid`` or ``refused`` (from the recorded ``raw``
    reply), else ``not_asked``. ``klass`` is PandaLM's ``meta.motivation_app`` when present,
    else the subset.

    Raises:
        InvalidInput: unreadable file, a line that is not JSON, a missing or mistyped field, a
            verdict that is not 1/2/0/null, or an empty file (message names file and line).
    """
    p = Path(path)
    rows = list(read_jsonl(p))
    if not rows:
        raise InvalidInput(f"{p}: no items", field="dataset")
    asked = _asked_orders(obj for _, obj in rows)
    items = [_item(obj, f"{p}:{lineno}", asked) for lineno, obj in rows]
    return CalibrationSet(name=str(rows[0][1].get("dataset") or p.stem), path=p, items=items)


def _asked_orders(objs: Iterable[Any]) -> set[tuple[str, str]]:
    """(judge, order) pairs with at least one recorded verdict."""
    asked: set[tuple[str, str]] = set()
    for obj in objs:
        judges = obj.get("judges") if isinstance(obj, dict) else None
        for judge, v in (judges or {}).items():
            asked.update((judge, o) for o in ORDERS if isinstance(v, dict) and v.get(o) is not None)
    return asked


def _item(obj: Any, where: str, asked: set[tuple[str, str]]) -> CalibrationItem:
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: a line must be a JSON object", field="line")
    human, judges = obj.get("human"), obj.get("judges")
    if not isinstance(human, list) or not all(h in (0, 1, 2) for h in human):
        raise InvalidInput(f"{where}: human must be a list of 1, 2 or 0", field="human")
    if not isinstance(judges, dict) or not isinstance(obj.get("id"), str):
        raise InvalidInput(f"{where}: missing id or judges", field="judges")
    verdicts = {}
    for judge, v in judges.items():
        if not isinstance(v, dict):
            raise InvalidInput(f"{where}: judges.{judge} must be an object", field="judges")
        raw = v.get("raw") or {}
        first, second = (_verdict(v.get(o), raw.get(o), (judge, o) in asked, where) for o in ORDERS)
        verdicts[judge] = (first, second)
    meta = obj.get("meta") or {}
    subset = str(obj.get("subset") or obj.get("dataset") or "")
    return CalibrationItem(
        id=obj["id"],
        subset=subset,
        klass=str(meta.get("motivation_app") or subset),
        human=tuple(int(h) for h in human),
        verdicts=verdicts,
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
