"""Cohen's kappa, its large-sample standard error and intervals (pure numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import norm


def confusion_matrix(
    a: npt.ArrayLike, b: npt.ArrayLike, categories: Sequence[int]
) -> npt.NDArray[np.int64]:
    """Counts, shape (k, k): rows are ``a``'s category, columns ``b``'s, in ``categories``
    order. Pairs with a value outside ``categories`` are not counted.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError("a and b must have the same length")
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)), dtype=np.int64)
    for u, v in zip(x.tolist(), y.tolist(), strict=True):
        if u in index and v in index:
            table[index[u], index[v]] += 1
    return table


def kappa_from_table(table: npt.ArrayLike) -> float:
    """Cohen's kappa of a (k, k) count table: (p_o - p_e) / (1 - p_e). NaN when the table is
    empty or p_e = 1 (both raters used one and the same category throughout)."""
    t = np.asarray(table, dtype=float)
    n = t.sum()
    if n == 0:
        return math.nan
    p = t / n
    po, pe = float(np.trace(p)), float(p.sum(axis=1) @ p.sum(axis=0))
    if pe >= 1.0:
        return math.nan
    return (po - pe) / (1.0 - pe)


def cohen_kappa(
    a: npt.ArrayLike, b: npt.ArrayLike, categories: Sequence[int] | None = None
) -> float:
    """Cohen's kappa of two raters' labels (arrays of shape (n,)); categories default to the
    union of the values seen (as ``sklearn.metrics.cohen_kappa_score`` does)."""
    cats = (
        sorted(set(np.asarray(a).tolist()) | set(np.asarray(b).tolist()))
        if categories is None
        else list(categories)
    )
    return kappa_from_table(confusion_matrix(a, b, cats))


def kappa_se(table: npt.ArrayLike) -> float:
    """Large-sample standard error of Cohen's kappa, not assuming kappa = 0 (Fleiss, Cohen &
    Everitt 1969; Fleiss, Levin & Paik 2003, eq. 18.13), for a (k, k) count table::

        A = sum_i p_ii [1 - (p_i. + p_.i)(1 - kappa)]^2
        B = (1 - kappa)^2 sum_{i != j} p_ij (p_.i + p_j.)^2
        C = [kappa - p_e (1 - kappa)]^2
        SE = sqrt(A + B - C) / ((1 - p_e) sqrt(n))

    This is the delta-method variance of kappa under multinomial sampling. NaN when kappa is.
    """
    t = np.asarray(table, dtype=float)
    n = t.sum()
    kappa = kappa_from_table(t)
    if math.isnan(kappa):
        return math.nan
    p = t / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    pe = float(rows @ cols)
    diag = np.diag(p)
    a = float(np.sum(diag * (1.0 - (rows + cols) * (1.0 - kappa)) ** 2))
    off = p.copy()
    np.fill_diagonal(off, 0.0)
    b = (1.0 - kappa) ** 2 * float(np.sum(off * (cols[:, None] + rows[None, :]) ** 2))
    c = (kappa - pe * (1.0 - kappa)) ** 2
    return math.sqrt(max(a + b - c, 0.0)) / ((1.0 - pe) * math.sqrt(n))


@dataclass(frozen=True, slots=True)
class KappaEstimate:
    """Cohen's kappa over ``n`` pairs with its ``confidence`` interval (Fleiss-Cohen-Everitt SE,
    normal approximation). Values are None when kappa is undefined (n = 0 or p_e = 1)."""

    kappa: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    confidence: float = 0.95


def kappa_interval(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    categories: Sequence[int],
    *,
    confidence: float = 0.95,
) -> KappaEstimate:
    """Kappa of ``a`` vs ``b`` (shape (n,)) over ``categories`` with its interval
    kappa +- z_{(1+confidence)/2} * SE (:func:`kappa_se`), clipped to [-1, 1]."""
    table = confusion_matrix(a, b, categories)
    n = int(table.sum())
    kappa = kappa_from_table(table)
    if math.isnan(kappa):
        return KappaEstimate(None, None, None, None, n, confidence)
    se = kappa_se(table)
    z = float(norm.ppf(0.5 + confidence / 2))
    return KappaEstimate(
        kappa, se, max(-1.0, kappa - z * se), min(1.0, kappa + z * se), n, confidence
    )


def kappa_bootstrap_interval(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    categories: Sequence[int],
    rng: np.random.Generator,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of kappa (Efron & Tibshirani 1993, ch. 13): resample the
    (a, b) pairs with replacement ``n_boot`` times using ``rng``; replicates where kappa is
    undefined are dropped.

    Raises:
        ValueError: no replicate had a defined kappa.
    """
    x, y = np.asarray(a), np.asarray(b)
    n = len(x)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        k = cohen_kappa(x[idx], y[idx], categories)
        if not math.isnan(k):
            stats.append(k)
    if not stats:
        raise ValueError("kappa is undefined in every bootstrap replicate")
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)
