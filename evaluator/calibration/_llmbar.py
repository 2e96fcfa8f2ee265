"""LLMBar's own ``statistics.json`` recomputed the authors' way, to check against theirs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluator.calibration._data import CalibrationItem, CalibrationSet, arrays
from evaluator.calibration._kappa import cohen_kappa
from evaluator.datasets import read_jsonl


def llmbar_authors_statistics(
    label: npt.ArrayLike, v12: npt.ArrayLike, v21: npt.ArrayLike
) -> dict[str, Any]:
    """LLMBar's ``statistics.json`` recomputed exactly as the authors' ``LLMEvaluator/
    evaluate.py`` (princeton-nlp/LLMBar) does, for comparison with their published numbers.

    ``label`` (1|2), ``v12``/``v21`` (1|2, or a negative code for no verdict), shape (n,).
    ``correct_*`` and ``equal`` count over all n items, a missing verdict counting as wrong
    (and two missing verdicts as equal). Their ``kappa_*`` feed ``cohen_kappa_score`` with the
    verdict coded ``int(w) if w in ("0", "1") else 0`` but the label left as 1|2, so a verdict
    "2" becomes 0 and can never match a label 2: those kappas measure agreement on "output_1
    wins" only and are not Cohen's kappa of the judge vs the humans. Reproduced here on
    purpose; :func:`calibrate` reports the kappa of the actual verdicts.
    """
    y = np.asarray(label, dtype=np.int64)
    f, t = np.asarray(v12, dtype=np.int64), np.asarray(v21, dtype=np.int64)
    n = len(y)
    c_false, c_true = int(np.sum(f == y)), int(np.sum(t == y))
    c_both, equal = int(np.sum((f == y) & (t == y))), int(np.sum(f == t))
    code_f, code_t = np.where(f == 1, 1, 0), np.where(t == 1, 1, 0)
    stats: dict[str, Any] = {
        "correct_False": f"{c_false} / {n} = {c_false / n * 100}%",
        "correct_True": f"{c_true} / {n} = {c_true / n * 100}%",
        "correct_average": f"{(c_false + c_true) / 2 / n * 100}%",
        "correct_both": f"{c_both} / {n} = {c_both / n * 100}%",
        "equal": f"{equal} / {n} = {equal / n * 100}%",
        "kappa_False": cohen_kappa(code_f, y),
        "kappa_True": cohen_kappa(code_t, y),
    }
    stats["kappa_average"] = (stats["kappa_False"] + stats["kappa_True"]) / 2
    stats["kappa_agreement"] = cohen_kappa(code_f, code_t)
    return stats


def load_llmbar_statistics(path: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``llmbar_statistics.jsonl`` by (subset, evaluator).

    Raises:
        InvalidInput: unreadable file or a line that is not JSON.
    """
    return {(obj["subset"], obj["evaluator"]): obj for _, obj in read_jsonl(Path(path))}


def llmbar_reproduction(
    cal: CalibrationSet, published: Mapping[tuple[str, str], Mapping[str, Any]]
) -> Iterable[tuple[str, str, dict[str, Any], Mapping[str, Any] | None]]:
    """(subset, judge, recomputed authors' statistics, published statistics or None) for every
    subset x judge in ``cal``."""
    for judge in cal.judges:
        subsets: dict[str, list[CalibrationItem]] = {}
        for item in cal.items:
            if judge in item.verdicts:
                subsets.setdefault(item.subset, []).append(item)
        for subset, members in subsets.items():
            human, v12, v21 = arrays(members, judge)
            yield (
                subset,
                judge,
                llmbar_authors_statistics(human, v12, v21),
                published.get((subset, judge)),
            )


def same_statistics(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
    """Strings equal exactly; kappas equal within 1e-12 (float summation order may differ
    from scikit-learn's in the last bits)."""
    for key, value in mine.items():
        other = theirs.get(key)
        if isinstance(value, str):
            if value != other:
                return False
        elif not isinstance(other, int | float) or not math.isclose(
            value, other, rel_tol=1e-12, abs_tol=1e-12
        ):
            return False
    return True
