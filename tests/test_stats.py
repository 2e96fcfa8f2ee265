"""Tiny samples never escalate: Wilson intervals and the fixed-window escalation rule."""

from __future__ import annotations

import pytest

from evaluator.stats import fixed_window_rule, wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(1, 2, 0.095, 0.906), (5, 100, 0.022, 0.112), (20, 400, 0.033, 0.076), (0, 30, 0.0, 0.114)],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    est = wilson(k, n)
    assert est.ci_low is not None and est.ci_high is not None
    # The field case quotes percentages to 0.1; 1/2's exact upper bound is 0.90547, which the
    # case writes as 90.6%, so compare within 0.001 rather than by rounding.
    assert est.ci_low == pytest.approx(low, abs=1e-3)
    assert est.ci_high == pytest.approx(high, abs=1e-3)
    assert est.rate == k / n


def test_empty_window_has_no_rate() -> None:
    est = wilson(0, 0)
    assert (est.n, est.rate, est.ci_low, est.ci_high) == (0, None, None, None)


@pytest.mark.parametrize(
    ("k", "n", "action"),
    [
        (1, 2, "too_few"),  # 50% of 2: never escalates on two samples
        (5, 100, "not_conclusive"),  # 2.2%..11.2% contains 3%
        (20, 400, "escalate"),  # 3.3%..7.6% is above 3%
        (0, 30, "hold"),  # 0% with an upper bound of 11.4%, reported
    ],
)
def test_fixed_window_rule(k: int, n: int, action: str) -> None:
    decision = fixed_window_rule(k, n, threshold=0.03, min_samples=30)
    assert decision.action == action
    if n == 30:
        assert "11.4%" in decision.reason


@pytest.mark.parametrize(("k", "n"), [(-1, 3), (4, 3), (0, -1)])
def test_wilson_rejects_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(k, n)
