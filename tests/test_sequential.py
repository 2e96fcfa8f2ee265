"""The sequential escalation rule (evaluator.sequential): tiny samples and flapping exactly, the
formulas, the operating characteristics by a seeded simulation, and the state round trip."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from evaluator.sequential import (
    RuleState,
    SequentialParams,
    advance,
    arl_in_control,
    decision_limits,
    fresh_arrays,
    increments,
    kl_bernoulli,
    neutral_rate,
    restart,
    sprt_limits,
    step,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DEFAULTS = SequentialParams()


def one_batch(k: int, n: int, params: SequentialParams = DEFAULTS):  # type: ignore[no-untyped-def]
    return step(RuleState.fresh(T0), n, k, T0 + timedelta(hours=1), params)


# ---- tiny samples never escalate ---------------------------------------------------------------


def test_one_of_two_is_too_few_and_reports_its_interval() -> None:
    _, d = one_batch(1, 2)
    assert d.action == "too_few"
    # Wilson 95%: [0.0945, 0.9055] (the field case rounds the upper bound to 90.6%).
    assert d.estimate.ci_low == pytest.approx(0.0945, abs=5e-4)
    assert d.estimate.ci_high == pytest.approx(0.9055, abs=5e-4)


def test_five_of_hundred_is_not_yet_conclusive() -> None:
    state, d = one_batch(5, 100)
    assert d.action == "not_conclusive"
    assert (round(d.estimate.ci_low or 0, 3), round(d.estimate.ci_high or 0, 3)) == (0.022, 0.112)
    # Fresh start: Wald's SPRT has W = 5a + 95b = 1.63, between B = -2.29 and A = 4.50.
    a, b = increments(0.02, 0.05)
    assert state.live and state.w == pytest.approx(5 * a + 95 * b)
    assert state.w == pytest.approx(1.6278, abs=1e-4)


def test_twenty_of_four_hundred_escalates_with_its_evidence() -> None:
    _, d = one_batch(20, 400)
    assert d.action == "escalate"
    assert (round(d.run.ci_low or 0, 3), round(d.run.ci_high or 0, 3)) == (0.033, 0.076)
    assert (d.run.k, d.run.n) == (20, 400)
    assert "20/400 = 5.0% [3.3%, 7.6%]" in d.reason


def test_twenty_of_four_hundred_in_hourly_batches_escalates_too() -> None:
    state = RuleState.fresh(T0)
    actions = []
    for hour in range(1, 5):
        state, d = step(state, 100, 5, T0 + timedelta(hours=hour), DEFAULTS)
        actions.append(d.action)
    # W after each batch: 1.63, 3.27, 4.90 >= A = 4.50: 15/300 already suffices.
    assert actions == ["not_conclusive", "not_conclusive", "escalate", "escalate"]


def test_zero_of_thirty_reports_an_upper_bound_not_zero() -> None:
    _, d = one_batch(0, 30)
    assert d.action == "hold"
    assert d.estimate.rate == 0.0
    assert round(d.estimate.ci_high or 0, 3) == 0.114
    assert "[0.0%, 11.4%]" in d.reason


def test_min_samples_holds_even_overwhelming_evidence() -> None:
    _, d = one_batch(10, 10)
    assert d.action == "too_few"
    _, d = one_batch(10, 30)
    assert d.action == "escalate"


# ---- no flapping around the threshold ----------------------------------------------------------

Q3_RATES = (0.031, 0.029, 0.031, 0.029, 0.032)


def closed_loop(params: SequentialParams, n: int) -> list[str]:
    """Windows of n cheaper-model verdicts at the hovering rates, one day each: the serving model's
    verdicts while on baseline, shadow probes while escalated. Returns the status changes."""
    state, escalated, changes = RuleState.fresh(T0), False, []
    for day, rate in enumerate(Q3_RATES, start=1):
        k = round(rate * n)
        at = T0 + timedelta(days=day)
        if escalated:
            state, d = step(state, 0, 0, at, params, shadow_n=n, shadow_k=k)
        else:
            state, d = step(state, n, k, at, params)
        if d.action == "escalate" and not escalated:
            escalated, state = True, RuleState.fresh(at)
            changes.append("escalate")
        elif d.action == "deescalate" and escalated:
            escalated, state = False, RuleState.fresh(at)
            changes.append("deescalate")
    return changes


def naive_threshold_loop(n: int) -> list[str]:
    """No hysteresis: escalate above the threshold, return at or below it."""
    escalated, changes = False, []
    for rate in Q3_RATES:
        above = round(rate * n) / n > 0.03
        if above != escalated:
            escalated = above
            changes.append("escalate" if above else "deescalate")
    return changes


def test_hovering_rate_escalates_once_not_three_times() -> None:
    # A tight band around 3% (2.5% / 3.5%) and 100,000 verdicts a window, so that every window
    # is conclusive on its own: 3.1% escalates; 2.9% is above the lower level (2.5%), so the
    # class never returns, and never escalates again.
    tight = SequentialParams(p0=0.025, p1=0.035)
    assert naive_threshold_loop(100_000).count("escalate") == 3
    assert closed_loop(tight, 100_000) == ["escalate"]


def test_default_band_neither_escalates_nor_flaps() -> None:
    # With the default band (2%, 5%) 3.1% is inside the indifference zone (neutral 3.28%).
    assert closed_loop(DEFAULTS, 1000) == []
    assert neutral_rate(0.02, 0.05) == pytest.approx(0.032817, abs=1e-6)


def test_return_needs_k_windows_in_a_row_below_the_lower_level() -> None:
    params = SequentialParams(deescalate_windows=3)
    state = RuleState.fresh(T0)
    actions = []
    # Shadow verdicts at 0% for 4 days (1000 a day): D passes A on day 1, but the third window
    # below 2% is only closed by the first update of day 4.
    for day in range(4):
        at = T0 + timedelta(days=day, hours=12)
        state, d = step(state, 0, 0, at, params, shadow_n=1000, shadow_k=0)
        actions.append(d.action)
    assert state.d >= params.sprt_upper
    assert actions == ["too_few", "too_few", "too_few", "deescalate"]
    # One window above the lower level breaks the run.
    state = RuleState.fresh(T0)
    for day, k in enumerate((0, 0, 30, 0, 0)):
        state, d = step(
            state, 0, 0, T0 + timedelta(days=day, hours=12), params, shadow_n=1000, shadow_k=k
        )
    assert (state.below, d.action) == (1, "too_few")  # day 3 closed; day 4 still open


# ---- recency -----------------------------------------------------------------------------------


def test_old_evidence_ages_out() -> None:
    fixed = SequentialParams(decision_limit=6.0, half_life_days=7.0)
    watched = replace(RuleState.fresh(T0), live=False)  # the fresh-start SPRT is over
    state, d = step(watched, 200, 12, T0 + timedelta(hours=1), fixed)
    assert d.action != "escalate" and state.s > 5.0
    # The same disagreement escalates at once, but not after four idle weeks (s / 16).
    _, d_soon = step(state, 1, 1, T0 + timedelta(hours=2), fixed)
    late, d_late = step(state, 1, 1, T0 + timedelta(days=28, hours=1), fixed)
    assert d_soon.action == "escalate"
    assert d_late.action != "escalate"
    assert late.s == pytest.approx(state.s / 16 + increments(0.02, 0.05)[0])


# ---- the formulas ------------------------------------------------------------------------------


def test_wald_increments_and_limits() -> None:
    a, b = increments(0.02, 0.05)
    assert (round(a, 4), round(b, 4)) == (0.9163, -0.0311)
    upper, lower = sprt_limits(0.01, 0.10)
    assert (round(upper, 4), round(lower, 4)) == (4.4998, -2.2925)
    kl = 0.02 * math.log(0.4) + 0.98 * math.log(0.98 / 0.95)
    assert kl_bernoulli(0.02, 0.05) == pytest.approx(kl)


def test_decision_limit_inverts_the_arl_approximation() -> None:
    for arl0 in (1e3, 7.3e4, 3.65e6, 1e9):
        h = float(decision_limits(arl0, 0.02, 0.05))
        assert arl_in_control(h, 0.02, 0.05) == pytest.approx(arl0, rel=1e-9)
    assert float(decision_limits(0.0, 0.02, 0.05)) == 0.0


def test_limit_follows_volume_and_never_drops_below_wald() -> None:
    low = step(RuleState.fresh(T0), 1, 0, T0 + timedelta(days=2), DEFAULTS)[0]
    high = step(RuleState.fresh(T0), 5000, 100, T0 + timedelta(days=1), DEFAULTS)[0]
    assert low.h == pytest.approx(DEFAULTS.sprt_upper)
    assert high.h == pytest.approx(float(decision_limits(3650 * 5000, 0.02, 0.05)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p0": 0.05, "p1": 0.02},
        {"alpha": 0.0},
        {"beta": 0.7},
        {"arl0_days": 0},
        {"half_life_days": -1.0},
        {"min_samples": 0},
        {"lower_level": 0.05},
    ],
)
def test_bad_parameters_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SequentialParams(**kwargs)  # type: ignore[arg-type]


def test_bad_counts_and_naive_times_raise() -> None:
    with pytest.raises(ValueError):
        step(RuleState.fresh(T0), 3, 4, T0, DEFAULTS)
    with pytest.raises(ValueError):
        RuleState.fresh(datetime(2025, 1, 1))


# ---- state ---------------------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state = RuleState.fresh(T0)
    rng = np.random.default_rng(3)
    for hour in range(1, 60):
        n = int(rng.poisson(20))
        state, _ = step(
            state,
            n,
            int(rng.binomial(n, 0.04)),
            T0 + timedelta(hours=hour),
            DEFAULTS,
            shadow_n=5,
            shadow_k=int(rng.binomial(5, 0.01)),
        )
    data = json.loads(json.dumps(state.to_dict()))
    assert RuleState.from_dict(data) == state
    assert len(json.dumps(data)) < 600
    with pytest.raises(ValueError, match="version"):
        RuleState.from_dict({**data, "v": 99})
    with pytest.raises(ValueError, match="lacks"):
        RuleState.from_dict({k: v for k, v in data.items() if k != "s"})


def test_scalar_step_is_the_vectorised_core() -> None:
    rng = np.random.default_rng(11)
    size = 5
    arrays = fresh_arrays(size, 0.0)
    states = [RuleState.fresh(datetime(1970, 1, 1, tzinfo=UTC)) for _ in range(size)]
    for hour in range(1, 100):
        n = rng.poisson(3.0, size)
        k = rng.binomial(n, 0.05)
        out = advance(arrays, n, k, hour / 24, DEFAULTS)
        arrays = out.state
        for i in range(size):
            at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=hour)
            states[i], d = step(states[i], int(n[i]), int(k[i]), at, DEFAULTS)
            assert states[i].s == pytest.approx(float(arrays.s[i]), abs=1e-9)
            assert (d.action == "escalate") == bool(out.escalate[i])


# ---- operating characteristics -----------------------------------------------------------------


def simulate(
    p_before: float,
    p_after: float,
    change_day: float,
    days: int,
    size: int,
    volume: float,
    seed: int,
) -> tuple[int, int, list[float]]:
    """Hourly Poisson(volume/24) verdicts; restart after every escalation. Returns (escalations
    before the change, classes escalated in their first 30 days, verdicts to first escalation
    after the change per class)."""
    rng = np.random.default_rng(seed)
    arrays = fresh_arrays(size, 0.0)
    before = first_month = 0
    seen = np.zeros(size)
    delay = np.full(size, np.nan)
    change = int(change_day * 24)
    for hour in range(days * 24):
        rate = p_before if hour < change else p_after
        n = rng.poisson(volume / 24, size)
        k = rng.binomial(n, rate)
        if hour >= change:
            seen += n
        out = advance(arrays, n, k, (hour + 1) / 24, DEFAULTS)
        if hour < change:
            before += int(out.escalate.sum())
            if hour < 30 * 24:
                first_month += int(out.escalate.sum())
        else:
            hit = out.escalate & np.isnan(delay)
            delay[hit] = seen[hit]
        arrays = restart(out.state, out.escalate, (hour + 1) / 24)
    return before, first_month, sorted(delay[~np.isnan(delay)].tolist())


def test_operating_characteristics_seeded() -> None:
    # 300 classes at 100 graded/day, 2% (= p0) for 120 days, then 6%.
    before, first_month, delays = simulate(0.02, 0.06, 120, 150, 300, 100.0, seed=7)
    # Exact counts for this seed (numpy PCG64) ...
    assert (before, first_month, len(delays)) == (4, 1, 300)
    assert np.median(delays) == 273.0
    # ... and what they must respect: fewer false escalations than the nominal steady-state
    # ARL (300 classes x 120 days / 3650 days = 9.9), a fresh-start excursion within e^-A, and a
    # median delay near Wald's ARL1 approximation.
    assert before < 300 * 120 / DEFAULTS.arl0_days
    assert first_month / 300 <= math.exp(-DEFAULTS.sprt_upper)
    h = float(decision_limits(DEFAULTS.arl0_days * 100, 0.02, 0.05))
    arl1 = (math.exp(-h) + h - 1) / kl_bernoulli(0.06, 0.02)
    assert 0.5 * arl1 < np.median(delays) < 1.5 * arl1


def test_operating_characteristics_at_one_percent() -> None:
    before, first_month, _ = simulate(0.01, 0.01, 200, 200, 300, 100.0, seed=8)
    assert (before, first_month) == (0, 0)
