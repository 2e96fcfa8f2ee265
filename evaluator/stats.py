"""Statistics of escalation: disagreement rate with its Wilson score interval, and the fixed-window
escalation rule.

Wilson interval: E. B. Wilson, "Probable inference, the law of succession, and statistical
inference", JASA 22 (1927); computed by ``scipy.stats.binomtest(k, n).proportion_ci(method=
"wilson")`` (no continuity correction). Known values (tiny samples): 1/2 -> [0.095, 0.906],
5/100 -> [0.022, 0.112], 20/400 -> [0.033, 0.076], 0/30 -> [0, 0.114].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scipy.stats import binomtest


@dataclass(frozen=True, slots=True)
class RateEstimate:
    """k disagreements of n graded samples. ``rate`` and the interval are None when n = 0."""

    n: int
    k: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float


def wilson(k: int, n: int, confidence: float = 0.95) -> RateEstimate:
    """Disagreement rate k/n with its two-sided Wilson interval at ``confidence``.

    Raises:
        ValueError: k < 0, n < 0, k > n, or confidence outside (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return RateEstimate(0, 0, None, None, None, confidence)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return RateEstimate(n, k, k / n, float(ci.low), float(ci.high), confidence)


Action = Literal["escalate", "hold", "not_conclusive", "too_few"]


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """What the rule says about a class, and why (``reason`` is shown to operators)."""

    action: Action
    estimate: RateEstimate
    rule: str
    reason: str


def fixed_window_rule(
    k: int, n: int, *, threshold: float, min_samples: int, confidence: float = 0.95
) -> RuleDecision:
    """The skeleton's escalation rule over one window of graded samples.

    Escalate when n >= ``min_samples``, the rate k/n is above ``threshold`` and so is the lower
    bound of its Wilson interval. Otherwise ``too_few`` (n < min_samples), ``not_conclusive``
    (the rate is above the threshold but the interval still reaches below it) or ``hold`` (the
    rate is at or below the threshold; the interval is reported with it, never a bare 0%).
    """
    est = wilson(k, n, confidence)
    rule = f"wilson(conf={confidence:g}) lower > {threshold:g}, n >= {min_samples}"
    if n < min_samples:
        return RuleDecision("too_few", est, rule, f"{n} graded < min_samples {min_samples}")
    assert est.rate is not None and est.ci_low is not None and est.ci_high is not None
    interval = f"{est.rate:.1%} [{est.ci_low:.1%}, {est.ci_high:.1%}]"
    if est.rate > threshold and est.ci_low > threshold:
        return RuleDecision("escalate", est, rule, f"{k}/{n} = {interval} above {threshold:.1%}")
    if est.rate <= threshold:
        return RuleDecision("hold", est, rule, f"{k}/{n} = {interval} at or below {threshold:.1%}")
    return RuleDecision(
        "not_conclusive", est, rule, f"{k}/{n} = {interval}: above {threshold:.1%}, not yet proven"
    )
