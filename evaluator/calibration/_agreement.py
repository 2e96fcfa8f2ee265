"""One judge against the human consensus: agreement, kappa, flips, missing verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from evaluator.calibration._data import (
    INVALID,
    NO_CONSENSUS,
    NOT_ASKED,
    ORDERS,
    CalibrationItem,
    CalibrationSet,
    IntArray,
    arrays,
)
from evaluator.calibration._kappa import KappaEstimate, confusion_matrix, kappa_interval
from router.errors import InvalidInput


def combine_orders(
    v12: npt.ArrayLike, v21: npt.ArrayLike
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """The both-orders verdict and the flip mask, shape (n,) each: the common
    verdict when both orders agree; a tie (0) when both are valid and differ (a flip);
    :data:`INVALID` when either order has no verdict."""
    x, y = np.asarray(v12, dtype=np.int64), np.asarray(v21, dtype=np.int64)
    valid = (x >= 0) & (y >= 0)
    flips = valid & (x != y)
    combined = np.where(valid, np.where(flips, 0, x), INVALID).astype(np.int64)
    return combined, flips


@dataclass(frozen=True, slots=True)
class AgreementStats:
    """One verdict column of one judge against the human consensus.

    ``n`` items; ``valid`` with a verdict and a human consensus; ``invalid``/``refused`` without a
    verdict; ``agree`` verdict == consensus. ``confusion`` is (k, k): rows human, columns
    judge, in ``categories`` order, valid items only.
    """

    n: int
    valid: int
    invalid: int
    refused: int
    agree: int
    correct_all: int
    kappa: KappaEstimate
    categories: tuple[int, ...]
    confusion: npt.NDArray[np.int64]

    @property
    def agreement(self) -> float | None:
        """agree / valid (missing verdicts kept out, as in the disagreement rate)."""
        return self.agree / self.valid if self.valid else None

    @property
    def accuracy(self) -> float | None:
        """verdict == consensus over every item (a missing verdict counts as wrong: the LLMBar
        authors' ``correct_*``)."""
        return self.correct_all / self.n if self.n else None


def agreement_stats(
    human: npt.ArrayLike,
    verdicts: npt.ArrayLike,
    categories: Sequence[int],
    *,
    refused: int = 0,
    confidence: float = 0.95,
) -> AgreementStats:
    """Agreement of ``verdicts`` with ``human`` (shape (n,) each, codes as in :func:`arrays`).
    ``refused`` says how many of the missing verdicts were refusals (reported apart)."""
    h, v = np.asarray(human, dtype=np.int64), np.asarray(verdicts, dtype=np.int64)
    has_human = h >= 0
    answered = v >= 0
    both = has_human & answered
    missing = int(np.sum(v == INVALID))
    return AgreementStats(
        n=len(h),
        valid=int(np.sum(both)),
        invalid=missing - refused,
        refused=refused,
        agree=int(np.sum(both & (h == v))),
        correct_all=int(np.sum(h == v)),
        kappa=kappa_interval(h[both], v[both], categories, confidence=confidence),
        categories=tuple(categories),
        confusion=confusion_matrix(h[both], v[both], categories),
    )


@dataclass(frozen=True)
class JudgeCalibration:
    """A judge on one group of items (a subset, a class, or ``all``).

    ``orders`` holds :class:`AgreementStats` per asked order (``order_12``, ``order_21``);
    ``both`` the combined verdict when both orders were asked. ``flips`` / ``flip_base``:
    items whose two valid verdicts differ / items with two valid verdicts.
    """

    dataset: str
    group: str
    judge: str
    n: int
    no_consensus: int
    orders: dict[str, AgreementStats]
    both: AgreementStats | None
    flips: int
    flip_base: int
    correct_both: int
    equal: int
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def flip_rate(self) -> float | None:
        """Share of two-verdict items whose verdict changed with the presentation order."""
        return self.flips / self.flip_base if self.flip_base else None

    @property
    def asked(self) -> int:
        """Verdicts asked of the judge (items x asked orders)."""
        return sum(s.n for s in self.orders.values())

    @property
    def invalid_rate(self) -> float | None:
        """Missing verdicts (invalid + refused) / verdicts asked."""
        missing = sum(s.invalid + s.refused for s in self.orders.values())
        return missing / self.asked if self.asked else None

    @property
    def kappa_mean(self) -> float | None:
        """Mean of the per-order kappas: the figure for a judge used in one order (the
        ``judge_kappa`` setting of a judge_single class); None if any is undefined."""
        ks = [s.kappa.kappa for s in self.orders.values()]
        if not ks or any(k is None for k in ks):
            return None
        return float(np.mean([k for k in ks if k is not None]))


def _statuses(items: Sequence[CalibrationItem], judge: str) -> tuple[Counter[str], dict[str, int]]:
    """Verdict statuses of ``judge`` over ``items``, and refusals per order."""
    statuses: Counter[str] = Counter()
    refused = dict.fromkeys(ORDERS, 0)
    for item in items:
        pair = item.verdicts.get(judge, ())
        statuses.update(v.status for v in pair)
        for order, v in zip(ORDERS, pair, strict=False):
            refused[order] += v.status == "refused"
    return statuses, refused


def calibrate_judge(
    items: Sequence[CalibrationItem],
    judge: str,
    *,
    dataset: str,
    group: str,
    confidence: float = 0.95,
) -> JudgeCalibration:
    """Every statistic of ``judge`` over ``items`` (see the module docstring)."""
    human, v12, v21 = arrays(items, judge)
    statuses, refused = _statuses(items, judge)
    seen = set(human.tolist()) | set(v12.tolist()) | set(v21.tolist())
    cats = [c for c in (0, 1, 2) if c in seen]
    orders = {
        order: agreement_stats(human, column, cats, refused=refused[order], confidence=confidence)
        for order, column in zip(ORDERS, (v12, v21), strict=True)
        if not np.all(column == NOT_ASKED)
    }
    both = None
    combined, flip_mask = combine_orders(v12, v21)
    if len(orders) == 2:
        both_cats = sorted(set(cats) | {0})
        both = agreement_stats(human, combined, both_cats, confidence=confidence)
    return JudgeCalibration(
        dataset=dataset,
        group=group,
        judge=judge,
        n=len(human),
        no_consensus=int(np.sum(human == NO_CONSENSUS)),
        orders=orders,
        both=both,
        flips=int(np.sum(flip_mask)),
        flip_base=int(np.sum((v12 >= 0) & (v21 >= 0))),
        correct_both=int(np.sum((v12 == human) & (v21 == human))),
        equal=int(np.sum(v12 == v21)),
        statuses=statuses,
    )


def _matches(judge: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    w = wanted.casefold()
    return judge.casefold() == w or judge.casefold().split("/")[0] == w


def calibrate(
    cal: CalibrationSet,
    *,
    judge: str | None = None,
    by: str = "subset",
    confidence: float = 0.95,
) -> list[JudgeCalibration]:
    """Calibration of every judge (or those matching ``judge``: a full name such as
    ``GPT-4/Vanilla``, or the model part, ``GPT-4``, case-insensitive) per group (``by`` =
    ``subset`` or ``class``), then per judge over all its items (group ``all``, only when the
    judge spans more than one group).

    Raises:
        InvalidInput: no judge matches, or ``by`` is not ``subset``/``class``.
    """
    if by not in ("subset", "class"):
        raise InvalidInput("by must be 'subset' or 'class'", field="by")
    judges = [j for j in cal.judges if _matches(j, judge)]
    if not judges:
        raise InvalidInput(
            f"no judge named '{judge}' in {cal.path} (judges: {', '.join(cal.judges)})",
            field="judge",
        )
    groups: dict[str, list[CalibrationItem]] = {}
    for item in cal.items:
        groups.setdefault(item.subset if by == "subset" else item.klass, []).append(item)
    out = []
    for name in judges:
        spanned = 0
        for group, members in groups.items():
            mine = [i for i in members if name in i.verdicts]
            if mine:
                spanned += 1
                out.append(
                    calibrate_judge(
                        mine, name, dataset=cal.name, group=group, confidence=confidence
                    )
                )
        if spanned > 1:
            mine = [i for i in cal.items if name in i.verdicts]
            out.append(
                calibrate_judge(mine, name, dataset=cal.name, group="all", confidence=confidence)
            )
    return out
