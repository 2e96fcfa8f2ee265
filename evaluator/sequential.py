"""The sequential escalation rule: a Bernoulli CUSUM with Wald's SPRT at every fresh start,
exponential forgetting, a volume-calibrated decision limit, and K-window hysteresis on the way
back down. Pure functions over numpy arrays (one element per task class); the scalar
:func:`step` used by the escalation job runs the very same vectorised core as the benchmark.

The test, per task class, on graded verdicts (disagree = 1, agree = 0; invalid/refused never
enter): H0 rate <= ``p0`` against H1 rate >= ``p1`` (defaults 2% and 5% around a 3% threshold).

- **Increments** (Wald 1945, the log-likelihood ratio of one Bernoulli verdict):
  ``a = ln(p1/p0)`` per disagreement, ``b = ln((1-p1)/(1-p0))`` per agreement; a batch of
  ``k`` disagreements in ``n`` verdicts adds ``k*a + (n-k)*b`` (order-free, so counts suffice).
  With the defaults a = 0.916, b = -0.0311: one disagreement outweighs 29.5 agreements, and the
  statistic drifts up above the neutral rate ``-b/(a-b)`` = 3.28% and down below it.
- **CUSUM** (Page 1954; for Bernoulli data Reynolds & Stoumbos 1999):
  ``S <- max(0, g*S + k*a + (n-k)*b)``; escalate when ``S >= h`` and at least ``min_samples``
  verdicts were graded since the class's last change. Clamping at 0 restarts Wald's test every
  time the evidence favours H0, so the rule keeps monitoring and forgets evidence the data have
  already contradicted (Page's reading of the CUSUM as a sequence of SPRTs).
- **Recency**: ``g = 2**(-dt / half_life_days)`` decays the statistic with the wall-clock time
  ``dt`` between updates, so verdicts age out even when traffic stops (a class idle for a month
  does not escalate on one disagreement added to old evidence).
- **Decision limit** ``h``: chosen so that the steady-state mean time between false escalations
  at exactly ``p0`` is ``arl0_days``: ``ARL0(h) = (e^h - h - 1) / KL(p0||p1)`` verdicts (Wald's
  approximation of the CUSUM average run length, Basseville & Nikiforov 1993, "Detection of
  Abrupt Changes", sec. 5.2.2, eq. 5.2.44 with the LLR increments), times the class's graded
  volume (verdicts per day, an exponentially weighted estimate). ``h`` never goes below ``A``.
  A fixed ``decision_limit`` overrides the calibration.
- **Fresh start** (the fast-initial-response idea of Lucas & Crosier 1982, done with Wald's
  own test): from a fresh state (a new class, or any change of model) Wald's SPRT runs beside
  the CUSUM on the LLR ``W`` since the start, with limits ``A = ln((1-beta)/alpha)`` and
  ``B = ln(beta/(1-alpha))``. ``W >= A`` escalates; once ``W <= B`` (H0 accepted) the SPRT is
  over and only the CUSUM watches. So a fresh class escalates on exactly Wald's evidence
  (tiny samples: 20/400 -> W = 6.51 >= A = 4.50 escalates; 5/100 -> 1.63 is not conclusive),
  while a class watched for a while needs the full ``h``.
- **De-escalation** (the other direction, fed by shadow probes of the cheaper model): the same
  CUSUM for H0 rate >= ``threshold`` against H1 rate <= ``lower_level`` (default ``p0``),
  ``D <- max(0, g*D + k*ln(lower/threshold) + (n-k)*ln((1-lower)/(1-threshold)))``, must reach
  ``A`` AND the last ``deescalate_windows`` (K) completed windows of ``window_hours`` must each
  have a rate at or below ``lower_level``. Windows without verdicts neither count nor break the
  run. This is the hysteresis against flapping: the way up is neutral at 3.28%, the way down at
  2.47% (defaults), so a rate hovering at 3% drifts away from both and is never below the
  lower level K windows in a row: it escalates at most once and does not come back.

Operating characteristics (defaults p0 = 2%, p1 = 5%, alpha = 1%, beta = 10%):

- A fresh class whose true rate is <= p0 is falsely escalated by the fresh-start SPRT with
  probability <= ``exp(-A)`` = alpha / (1 - beta) = 1.1% (Wald 1945; Ville's inequality on the
  likelihood-ratio martingale); at 1% far less. A fresh class at p1 is missed by it with
  probability about beta, after which the CUSUM still detects it (a miss is a delay).
- In steady state, false escalations at p0 come once per ``arl0_days`` on average (nominal;
  forgetting and hourly batching make the realised ARL longer); at rates below p0 far less.
- A shift to p1 is detected after about ``(h - 1 + e^-h) / KL(p1||p0)`` verdicts on average
  from S = 0 (eq. 5.2.44 again).

The Wilson interval (:func:`evaluator.stats.wilson`) is reported with every decision, over the
window since the class's last change and over the CUSUM's current run (the verdicts since the
statistic last stood at 0: the maximum-likelihood change point).

References: A. Wald, "Sequential tests of statistical hypotheses", Ann. Math. Statist. 16 (1945);
E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954); J. M. Lucas and R. B. Crosier,
"Fast initial response for CUSUM quality-control schemes", Technometrics 24 (1982);
M. R. Reynolds and Z. G. Stoumbos, "A CUSUM chart for monitoring a proportion when inspecting
continuously", J. Quality Technology 31 (1999); M. Basseville and I. Nikiforov, "Detection of
Abrupt Changes: Theory and Application", Prentice Hall (1993); E. B. Wilson, JASA 22 (1927).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from evaluator.stats import RateEstimate, wilson

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ArrayLike = npt.NDArray[Any] | float | int

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATE_VERSION = 1
_DAY_S = 86_400.0


# ---- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequentialParams:
    """Parameters of the rule. Rates are fractions (0.02 = 2%); times in days unless named.

    Raises (on construction):
        ValueError: not 0 < p0 < p1 < 1; alpha or beta outside (0, 0.5); a non-positive time,
            count or limit.
    """

    p0: float = 0.02
    p1: float = 0.05
    alpha: float = 0.01
    beta: float = 0.10
    arl0_days: float = 3650.0
    decision_limit: float | None = None
    half_life_days: float | None = 60.0
    min_samples: int = 30
    lower_level: float | None = None
    deescalate_windows: int = 3
    window_hours: float = 24.0
    volume_tau_days: float = 7.0
    threshold: float = 0.03
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 < self.p0 < self.p1 < 1.0:
            raise ValueError(f"need 0 < p0 < p1 < 1, got p0={self.p0}, p1={self.p1}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {value}")
        if self.arl0_days <= 0 or self.window_hours <= 0 or self.volume_tau_days <= 0:
            raise ValueError("arl0_days, window_hours and volume_tau_days must be > 0")
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValueError("half_life_days must be > 0 (or None for no forgetting)")
        if self.decision_limit is not None and self.decision_limit <= 0:
            raise ValueError("decision_limit must be > 0")
        if self.min_samples < 1 or self.deescalate_windows < 1:
            raise ValueError("min_samples and deescalate_windows must be >= 1")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.lower < self.threshold:
            raise ValueError(
                f"need 0 < lower_level < threshold, got {self.lower} and {self.threshold}"
            )

    @property
    def lower(self) -> float:
        """The de-escalation level: ``lower_level``, else ``p0``."""
        return self.p0 if self.lower_level is None else self.lower_level

    @property
    def increments(self) -> tuple[float, float]:
        """(a, b): LLR per disagreement and per agreement (Wald 1945)."""
        return increments(self.p0, self.p1)

    @property
    def sprt_upper(self) -> float:
        """Wald's upper limit A = ln((1 - beta) / alpha)."""
        return sprt_limits(self.alpha, self.beta)[0]

    def describe(self) -> str:
        """One line naming the rule and its parameters (stored with every escalation event)."""
        limit = (
            f"h={self.decision_limit:g}"
            if self.decision_limit is not None
            else f"arl0={self.arl0_days:g}d"
        )
        half = "none" if self.half_life_days is None else f"{self.half_life_days:g}d"
        return (
            f"bernoulli-cusum(p0={self.p0:g}, p1={self.p1:g}, alpha={self.alpha:g}, "
            f"beta={self.beta:g}, {limit}, half-life={half}, n>={self.min_samples}, "
            f"K={self.deescalate_windows}x{self.window_hours:g}h<={self.lower:g})"
        )


# ---- the formulas ----------------------------------------------------------------------------


def increments(p0: float, p1: float) -> tuple[float, float]:
    """LLR of one verdict for H1 (rate p1) against H0 (rate p0): (disagree, agree) =
    (ln(p1/p0), ln((1-p1)/(1-p0))) in nats (Wald 1945)."""
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def sprt_limits(alpha: float, beta: float) -> tuple[float, float]:
    """Wald's SPRT limits (A, B) = (ln((1-beta)/alpha), ln(beta/(1-alpha))) in nats (Wald 1945):
    accept H1 at LLR >= A, H0 at LLR <= B, with error rates about alpha and beta."""
    return math.log((1.0 - beta) / alpha), math.log(beta / (1.0 - alpha))


def neutral_rate(p0: float, p1: float) -> float:
    """The rate at which the LLR has zero drift, -b / (a - b): 3.28% for (2%, 5%)."""
    a, b = increments(p0, p1)
    return -b / (a - b)


def kl_bernoulli(p: float, q: float) -> float:
    """Kullback-Leibler divergence KL(Bernoulli(p) || Bernoulli(q)) in nats per verdict."""
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def arl_in_control(h: float, p0: float, p1: float) -> float:
    """Mean verdicts between false alarms at rate p0 for limit ``h`` (no head start, no
    forgetting): (e^h - h - 1) / KL(p0||p1) (Basseville & Nikiforov 1993, eq. 5.2.44)."""
    return (math.exp(h) - h - 1.0) / kl_bernoulli(p0, p1)


def decision_limits(arl0_samples: ArrayLike, p0: float, p1: float) -> FloatArray:
    """Invert :func:`arl_in_control`: the ``h`` whose in-control ARL is ``arl0_samples``
    verdicts (array in, array out; 0 for ARL0 <= 0). Fixed-point ``h = ln(1 + h + x)`` with
    ``x = ARL0 * KL(p0||p1)``; converges to < 1e-9 in 8 steps for every x >= 0."""
    x = np.maximum(np.asarray(arl0_samples, dtype=np.float64), 0.0) * kl_bernoulli(p0, p1)
    h = np.log1p(x)
    for _ in range(8):
        h = np.log1p(h + x)
    return h


# ---- the vectorised core ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrays:
    """Rule state, one element per class. Counts are verdicts; ``t``/``start`` days since
    1970-01-01 UTC; ``s``, ``d``, ``w`` in nats; ``live`` 1 while the fresh-start SPRT runs, else
    0; ``win`` the index of the current de-escalation window."""

    s: FloatArray
    w: FloatArray
    live: FloatArray
    n: FloatArray
    k: FloatArray
    run_n: FloatArray
    run_k: FloatArray
    vol_n: FloatArray
    vol_t: FloatArray
    d: FloatArray
    dn: FloatArray
    dk: FloatArray
    win: FloatArray
    win_n: FloatArray
    win_k: FloatArray
    below: FloatArray
    t: FloatArray
    start: FloatArray


def fresh_arrays(size: int, t_days: float) -> Arrays:
    """``size`` fresh states at time ``t_days`` (every counter at :class:`RuleState`'s
    default)."""
    now = np.full(size, float(t_days))
    counters = {name: np.full(size, float(fresh)) for name, fresh in _FRESH.items()}
    return Arrays(**counters, t=now, start=now.copy())


def restart(state: Arrays, mask: BoolArray, t_days: float) -> Arrays:
    """Fresh state where ``mask`` (after a change of model), the rest unchanged."""
    fresh = fresh_arrays(mask.shape[0], t_days)
    fields = {
        name: np.where(mask, getattr(fresh, name), getattr(state, name))
        for name in Arrays.__dataclass_fields__
    }
    return Arrays(**fields)


@dataclass(frozen=True, slots=True)
class Step:
    """Outcome of one :func:`advance`: the new state, masks, and the limit used."""

    state: Arrays
    escalate: BoolArray
    deescalate: BoolArray
    h: FloatArray


def advance(
    state: Arrays,
    n: ArrayLike,
    k: ArrayLike,
    t_days: float,
    params: SequentialParams,
    shadow_n: ArrayLike = 0,
    shadow_k: ArrayLike = 0,
) -> Step:
    """Add one batch per class: ``k`` of ``n`` graded verdicts of the serving model disagreed,
    and ``shadow_k`` of ``shadow_n`` of the next cheaper model (shadow probes), all graded by
    time ``t_days`` (days since the epoch; an earlier time is treated as no time passing).

    Returns the new state and which classes the rule says to escalate / de-escalate. Pure: the
    input state is not modified.
    """
    p = params
    a, b = p.increments
    big_a, big_b = sprt_limits(p.alpha, p.beta)
    n_ = np.asarray(n, dtype=np.float64)
    k_ = np.asarray(k, dtype=np.float64)
    sn = np.asarray(shadow_n, dtype=np.float64)
    sk = np.asarray(shadow_k, dtype=np.float64)
    dt = np.maximum(t_days - state.t, 0.0)
    g = 1.0 if p.half_life_days is None else np.exp2(-dt / p.half_life_days)
    fv = np.exp(-dt / p.volume_tau_days)
    vol_n = state.vol_n * fv + n_
    # Exposure starts with the first verdicts (a class's window may start long before them).
    vol_t = state.vol_t * fv + np.where(state.vol_n > 0, dt, 0.0)
    if p.decision_limit is not None:
        h = np.full(np.shape(vol_n), p.decision_limit)
    else:
        per_day = vol_n / np.maximum(vol_t, 1.0)
        h = np.maximum(big_a, decision_limits(p.arl0_days * per_day, p.p0, p.p1))
    inc = k_ * a + (n_ - k_) * b
    s_prev = state.s * g
    s = np.maximum(0.0, s_prev + inc)
    run_n = np.where(s > 0, np.where(s_prev > 0, state.run_n + n_, n_), 0.0)
    run_k = np.where(s > 0, np.where(s_prev > 0, state.run_k + k_, k_), 0.0)
    # Wald's SPRT from the fresh start, until it accepts H0 (W <= B).
    live = state.live > 0
    w = np.where(live, state.w * g + inc, state.w)
    live_after = live & (w > big_b)
    n_tot = state.n + n_
    escalate = ((s >= h) | (live & (w >= big_a))) & (n_tot >= p.min_samples)
    # The other direction: the cheaper model's shadow verdicts, and K windows below `lower`.
    a_down, b_down = increments(p.threshold, p.lower)
    d = np.maximum(0.0, state.d * g + sk * a_down + (sn - sk) * b_down)
    win_now = np.floor(t_days * 24.0 / p.window_hours)
    moved = win_now > state.win
    closing = moved & (state.win >= 0) & (state.win_n > 0)  # empty windows are neutral
    was_below = state.win_k <= p.lower * state.win_n
    below = np.where(closing, np.where(was_below, state.below + 1, 0.0), state.below)
    win_n = np.where(moved, sn, state.win_n + sn)
    win_k = np.where(moved, sk, state.win_k + sk)
    win = np.where(moved, win_now, state.win)
    deescalate = (d >= big_a) & (below >= p.deescalate_windows)
    new = Arrays(
        s=s,
        w=w,
        live=live_after.astype(np.float64),
        n=n_tot,
        k=state.k + k_,
        run_n=run_n,
        run_k=run_k,
        vol_n=vol_n,
        vol_t=vol_t,
        d=d,
        dn=state.dn + sn,
        dk=state.dk + sk,
        win=win,
        win_n=win_n,
        win_k=win_k,
        below=below,
        t=np.maximum(state.t, t_days),
        start=state.start,
    )
    return Step(new, escalate, deescalate, h)


# ---- one class: the serialisable state and the decision --------------------------------------


def _days(at: datetime) -> float:
    if at.tzinfo is None:
        raise ValueError("naive datetime; use an aware UTC datetime")
    return (at - EPOCH).total_seconds() / _DAY_S


@dataclass(frozen=True, slots=True)
class RuleState:
    """One class's rule state; :meth:`to_dict` / :meth:`from_dict` round-trip it exactly through
    JSON (it is stored per class and shown in the API). Counts are verdicts since ``started_at``
    (the class's last change); ``s``/``d`` in nats; ``h`` the limit at the last update."""

    started_at: datetime
    updated_at: datetime
    s: float = 0.0
    w: float = 0.0
    live: bool = True
    n: int = 0
    k: int = 0
    run_n: int = 0
    run_k: int = 0
    vol_n: float = 0.0
    vol_t: float = 0.0
    d: float = 0.0
    dn: int = 0
    dk: int = 0
    win: int = -1
    win_n: int = 0
    win_k: int = 0
    below: int = 0
    h: float | None = None

    @classmethod
    def fresh(cls, at: datetime) -> RuleState:
        """The state of a class that has just started (or changed model) at ``at``."""
        _days(at)
        return cls(started_at=at, updated_at=at)

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-ready dict (ISO-8601 UTC times)."""
        counters = {name: getattr(self, name) for name in _FRESH}
        return {
            "v": STATE_VERSION,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "h": self.h,
            **counters,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleState:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown state version, a missing key, or a naive timestamp.
        """
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"unknown rule state version {data.get('v')!r}")
        try:
            counters: dict[str, Any] = {n: type(fresh)(data[n]) for n, fresh in _FRESH.items()}
            state = cls(
                started_at=datetime.fromisoformat(data["started_at"]),
                updated_at=datetime.fromisoformat(data["updated_at"]),
                h=None if data["h"] is None else float(data["h"]),
                **counters,
            )
        except KeyError as exc:
            raise ValueError(f"rule state lacks {exc}") from exc
        _days(state.started_at)
        _days(state.updated_at)
        return state

    def arrays(self) -> Arrays:
        """This state as 1-element arrays (the vectorised core's input)."""
        one = {name: np.array([float(getattr(self, name))]) for name in _FRESH}
        return Arrays(
            **one, t=np.array([_days(self.updated_at)]), start=np.array([_days(self.started_at)])
        )


_FRESH: dict[str, float | int | bool] = {
    f.name: f.default  # type: ignore[misc]
    for f in fields(RuleState)
    if f.name not in ("started_at", "updated_at", "h")
}
"""The rule state's counters and their fresh values, from :class:`RuleState`'s fields: the one
list that the JSON form, the arrays and :func:`step` follow (their Python type is the type of
the default: ``float`` statistics, ``int`` counts, ``bool`` flags)."""


Action = Literal["escalate", "deescalate", "hold", "not_conclusive", "too_few", "on_reference"]
"""What the rule says. ``on_reference``: the class is on its reference model and not escalated,
so it is never sampled (there is nothing to compare it with) and the rule has nothing to decide:
a state of its own, not a ``too_few`` that would never resolve."""


@dataclass(frozen=True, slots=True)
class SequentialDecision:
    """What the rule says about one class, and why (``reason`` is shown to operators).

    ``estimate``: Wilson interval over every verdict since the class's last change;
    ``run``: over the CUSUM's current run (the evidence the statistic is made of).
    """

    action: Action
    estimate: RateEstimate
    run: RateEstimate
    statistic: float
    limit: float
    rule: str
    reason: str


def _interval(est: RateEstimate) -> str:
    if est.rate is None or est.ci_low is None or est.ci_high is None:
        return "no verdicts"
    return f"{est.k}/{est.n} = {est.rate:.1%} [{est.ci_low:.1%}, {est.ci_high:.1%}]"


def decide(
    state: RuleState, params: SequentialParams, *, escalate: bool = False, deescalate: bool = False
) -> SequentialDecision:
    """The decision for a state (after :func:`step`, or as it stands for display)."""
    p = params
    est = wilson(state.k, state.n, p.confidence)
    run = wilson(state.run_k, state.run_n, p.confidence)
    h = state.h if state.h is not None else p.sprt_upper
    stat = f"S = {state.s:.2f} of h = {h:.2f}"
    if state.live:
        big_a, big_b = sprt_limits(p.alpha, p.beta)
        stat += f"; fresh-start SPRT W = {state.w:.2f} in ({big_b:.2f}, {big_a:.2f})"
    if escalate:
        action: Action = "escalate"
        reason = (
            f"{stat}: evidence for a rate of {p.p1:.1%} rather than {p.p0:.1%}; "
            f"since the statistic left 0: {_interval(run)}"
        )
    elif deescalate:
        action = "deescalate"
        reason = (
            f"cheaper model: D = {state.d:.2f} >= {p.sprt_upper:.2f} and {state.below} windows "
            f"in a row at or below {p.lower:.1%} ({state.dk}/{state.dn} shadow verdicts)"
        )
    elif state.n < p.min_samples:
        action = "too_few"
        reason = f"{state.n} graded < min_samples {p.min_samples}; {_interval(est)}; {stat}"
    elif est.rate is not None and est.rate > p.threshold:
        action = "not_conclusive"
        reason = f"{_interval(est)} above {p.threshold:.1%}, not yet proven: {stat}"
    else:
        action = "hold"
        reason = f"{_interval(est)}; {stat}"
    return SequentialDecision(action, est, run, state.s, h, p.describe(), reason)


def step(
    state: RuleState,
    n: int,
    k: int,
    at: datetime,
    params: SequentialParams,
    *,
    shadow_n: int = 0,
    shadow_k: int = 0,
) -> tuple[RuleState, SequentialDecision]:
    """Add ``k`` disagreements of ``n`` verdicts (and shadow verdicts of the cheaper model)
    graded by ``at`` to one class's state. Returns the new state and the decision.

    Raises:
        ValueError: a negative count, k > n, or a naive datetime.
    """
    if not (0 <= k <= n and 0 <= shadow_k <= shadow_n):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}, shadow {shadow_k}/{shadow_n}")
    out = advance(state.arrays(), n, k, _days(at), params, shadow_n, shadow_k)
    arr = out.state
    counters: dict[str, Any] = {n: type(fresh)(getattr(arr, n)[0]) for n, fresh in _FRESH.items()}
    new = replace(state, updated_at=max(at, state.updated_at), h=float(out.h[0]), **counters)
    return new, decide(
        new, params, escalate=bool(out.escalate[0]), deescalate=bool(out.deescalate[0])
    )
