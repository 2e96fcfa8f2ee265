"""Cost views: what the recorded traffic cost, grouped, over a UTC time range, and the economics of
quality assurance per task class. Every aggregate is one GROUP BY in the database (the same SQL
on SQLite and PostgreSQL); Python only merges the few grouped rows and prices token sums.

Money is exact (:mod:`router.money`): the rows' costs are whole nano-USD (``outcome.cost_nusd``,
``grade.cost_nusd``) and every sum is an integer sum in SQL, so a total equals the sum of its
rows' costs exactly. JSON and tables show USD (``*_usd``, a number with at most 9 decimals,
converted once at the edge) and the exact integers beside them (``*_nusd``).

Definitions (all money in nano-USD, shown as USD; tokens are counts):

- **requests**: decisions with an outcome, attributed to the outcome's ``created_at``.
- **tokens**: the outcomes' normalised counts (input = uncached input, cached input, cache write,
  output), as :class:`router.pricing.Usage`.
- **serving**: ``sum(outcome.cost_nusd)`` over priced outcomes; **unpriced**: outcomes whose
  ``cost_nusd`` is NULL, counted and never summed as 0.
- **counterfactual**: the same usage of the *priced* outcomes, each token kind at the premium
  model's price in effect at the outcome's decision time (the ``price`` history,
  :func:`router.pricing.cost_nusd`), so that **savings** = counterfactual - serving compares like
  with like. Pricing is linear, so the group's token sums are priced per price period and rounded
  half to even once per period (within 0.5 nano-USD of the exact figure per period). ``None``
  when the premium model had no price for some of those outcomes. Unlike
  :func:`evaluator.report.books`, cached and cache-write tokens are priced at the premium
  model's cached/cache-write prices (the same usage), not as uncached input. ``None`` when the
  premium model has no catalog row.
- **grading**: ``sum(grade.cost_nusd)`` (judge calls and reference answers), **shadow**: the same
  over shadow probes (``grade.shadow``), both apart from serving; a grade is attributed to its
  graded request's class, tier, caller and served model, and to its own ``created_at`` (when the
  money was spent). **unpriced grades**: grades whose ``cost_nusd`` is NULL.
- **premium share**: decisions routed to the premium model (``decision.model ==
  premium_model``, as stored) over requests.
- **batch lane** (:mod:`router.lane`): ``batch_requests`` are the requests answered through the
  providers' batch APIs, ``batch_serving`` their (discounted) cost, inside serving, and
  ``batch_saved`` = the same answers at the models' real-time prices - batch_serving
  (``lane_item.realtime_cost_nusd``, fixed when the answer was booked).
- **semantic cache** (:mod:`router.cache`): ``cache_lookups`` are the requests the cache stage
  saw, ``cache_hits`` those it answered (hit rate = hits / lookups); ``cache_saved`` what the
  hits' replaced calls would have cost at the routed model (``cache_lookup.saved_nusd``: a hit
  itself is served at 0, inside serving); ``embedding`` the lookups' embedding spend, apart
  from serving. The false-hit rate is over the graded hits (a grade's verdict ``disagree`` on
  a cached answer), with its 95% Wilson interval, attributed like any grade.

Break-even sampling rate of a class (:attr:`ClassEconomics.break_even_rate`): grading spend is
proportional to the number of graded samples, so at sample rate ``r`` it is
``G(r) = G * r / r0``, where ``G`` is the measured grading spend (shadow probes included) and
``r0`` the measured rate (sampled requests / requests of the class). Setting ``G(r)`` equal to
the routing savings ``S`` gives ``r* = r0 * S / G``. Above ``r*`` grading costs more than routing
saves; a class with ``G > S`` (``r* < r0``) is flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, func
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import Grade
from evaluator.stats import RateEstimate, wilson
from router.cache.models import CacheLookup
from router.errors import InvalidInput
from router.models import Decision, LaneItem, Outcome
from router.money import usd
from router.policy import ModelPrice
from router.pricing import Usage, cost_nusd
from router.table import latest_policy, price_history, price_period

GROUP_KEYS: tuple[str, ...] = ("day", "task_class", "model", "tier", "caller")
"""What a cost view can be grouped by: UTC day, task class, served model, tier, caller (the API
key id, ``decision.caller``; None = no key)."""


def parse_group_by(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"day,task_class"`` (or a list of names) -> ``("day", "task_class")``; empty = no grouping.

    Raises:
        InvalidInput: an unknown or repeated key (``field="group_by"``).
    """
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    keys = [p.strip() for p in parts if p.strip()]
    for key in keys:
        if key not in GROUP_KEYS:
            raise InvalidInput(
                f"group_by: unknown key {key!r} (keys: {', '.join(GROUP_KEYS)})", field="group_by"
            )
    if len(set(keys)) != len(keys):
        raise InvalidInput("group_by: a key is given twice", field="group_by")
    return tuple(keys)


def parse_instant(
    value: str | None, field_name: str, *, end_of_day: bool = False
) -> datetime | None:
    """An ISO date or datetime -> an aware UTC datetime (None stays None). A datetime without an
    offset is UTC; a bare date is that day's UTC midnight, or with ``end_of_day`` the next
    midnight (so ``until=2025-01-31`` includes the 31st).

    Raises:
        InvalidInput: not an ISO date or datetime (``field=field_name``).
    """
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        at = datetime.fromisoformat(text)
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:  # 9999-12-31 as an end of day, year 1 with a positive offset
        raise InvalidInput(
            f"{field_name}: {value!r} is outside the dates tierwise can store", field=field_name
        ) from None
    except ValueError:
        raise InvalidInput(
            f"{field_name}: {value!r} is not an ISO date (2025-01-31) or datetime "
            "(2025-01-31T12:00:00Z)",
            field=field_name,
        ) from None


def parse_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``since`` (inclusive) and ``until`` (exclusive; a bare date includes that whole day) as UTC
    datetimes (see :func:`parse_instant`).

    Raises:
        InvalidInput: a bad date (``field`` = ``since`` or ``until``), or ``since`` after
            ``until`` (``field="since"``).
    """
    start = parse_instant(since, "since")
    end = parse_instant(until, "until", end_of_day=True)
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"since ({since}) is after until ({until})", field="since")
    return start, end


@dataclass(frozen=True, slots=True)
class CostRow:
    """One group (or the totals, with an empty ``key``): counts, tokens, nano-USD (the
    ``*_usd`` properties give USD)."""

    key: dict[str, str | None]
    requests: int = 0
    unpriced: int = 0
    sampled: int = 0
    premium_requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    serving_nusd: int = 0
    counterfactual_nusd: int | None = None
    grading_nusd: int = 0
    shadow_grading_nusd: int = 0
    grades: int = 0
    unpriced_grades: int = 0
    batch_requests: int = 0
    batch_serving_nusd: int = 0
    batch_saved_nusd: int = 0
    cache_lookups: int = 0
    cache_hits: int = 0
    cache_saved_nusd: int = 0
    embedding_nusd: int = 0
    cache_graded_hits: int = 0
    cache_false_hits: int = 0

    @property
    def cache_hit_rate(self) -> float | None:
        """Cache hits / lookups (None before a lookup)."""
        return self.cache_hits / self.cache_lookups if self.cache_lookups else None

    @property
    def cache_false_hits_estimate(self) -> RateEstimate:
        """False hits / graded hits, 95% Wilson interval (:func:`evaluator.stats.wilson`)."""
        return wilson(self.cache_false_hits, self.cache_graded_hits)

    @property
    def batch_share(self) -> float | None:
        """Requests answered through the batch lane / requests (None without requests)."""
        return self.batch_requests / self.requests if self.requests else None

    @property
    def savings_nusd(self) -> int | None:
        """counterfactual - serving (None when the premium model is unpriced)."""
        if self.counterfactual_nusd is None:
            return None
        return self.counterfactual_nusd - self.serving_nusd

    @property
    def total_grading_nusd(self) -> int:
        """Grading spend including shadow probes."""
        return self.grading_nusd + self.shadow_grading_nusd

    @property
    def serving_usd(self) -> float:
        return usd(self.serving_nusd) or 0.0

    @property
    def counterfactual_usd(self) -> float | None:
        return usd(self.counterfactual_nusd)

    @property
    def savings_usd(self) -> float | None:
        return usd(self.savings_nusd)

    @property
    def grading_usd(self) -> float:
        return usd(self.grading_nusd) or 0.0

    @property
    def shadow_grading_usd(self) -> float:
        return usd(self.shadow_grading_nusd) or 0.0

    @property
    def total_grading_usd(self) -> float:
        return usd(self.total_grading_nusd) or 0.0

    @property
    def premium_share(self) -> float | None:
        """Requests routed to the premium model / requests (None without requests)."""
        return self.premium_requests / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the key's fields, then every count and USD figure (derived ones too)."""
        false_hits = self.cache_false_hits_estimate
        return {
            **self.key,
            "requests": self.requests,
            "unpriced": self.unpriced,
            "sampled": self.sampled,
            "premium_requests": self.premium_requests,
            "premium_share": self.premium_share,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "serving_usd": self.serving_usd,
            "counterfactual_usd": self.counterfactual_usd,
            "savings_usd": self.savings_usd,
            "grading_usd": self.grading_usd,
            "shadow_grading_usd": self.shadow_grading_usd,
            "serving_nusd": self.serving_nusd,
            "counterfactual_nusd": self.counterfactual_nusd,
            "savings_nusd": self.savings_nusd,
            "grading_nusd": self.grading_nusd,
            "shadow_grading_nusd": self.shadow_grading_nusd,
            "grades": self.grades,
            "unpriced_grades": self.unpriced_grades,
            "batch_requests": self.batch_requests,
            "batch_share": self.batch_share,
            "batch_serving_usd": usd(self.batch_serving_nusd) or 0.0,
            "batch_saved_usd": usd(self.batch_saved_nusd) or 0.0,
            "batch_serving_nusd": self.batch_serving_nusd,
            "batch_saved_nusd": self.batch_saved_nusd,
            "cache_lookups": self.cache_lookups,
            "cache_hits": self.cache_hits,
            "cache_hit_rate": self.cache_hit_rate,
            "cache_graded_hits": self.cache_graded_hits,
            "cache_false_hits": self.cache_false_hits,
            "cache_false_hit_rate": false_hits.rate,
            "cache_false_hit_ci": (
                None if false_hits.rate is None else [false_hits.ci_low, false_hits.ci_high]
            ),
            "cache_saved_usd": usd(self.cache_saved_nusd) or 0.0,
            "embedding_usd": usd(self.embedding_nusd) or 0.0,
            "cache_saved_nusd": self.cache_saved_nusd,
            "embedding_nusd": self.embedding_nusd,
        }


@dataclass(frozen=True, slots=True)
class ClassEconomics:
    """One task class: what routing saves against what grading costs (USD), and the break-even
    sampling rate (module docstring)."""

    task_class: str
    requests: int
    sampled: int
    savings_usd: float | None
    grading_usd: float

    @property
    def sample_rate(self) -> float | None:
        """Measured: sampled requests / requests (None without requests)."""
        return self.sampled / self.requests if self.requests else None

    @property
    def break_even_rate(self) -> float | None:
        """``r0 * S / G``; None when there is no grading spend (any rate breaks even), no
        requests or no counterfactual; 0.0 when routing saves nothing (``S <= 0``). Above 1.0
        when even grading every request would cost less than routing saves."""
        r0 = self.sample_rate
        if r0 is None or self.savings_usd is None or self.grading_usd <= 0:
            return None
        return max(0.0, r0 * self.savings_usd / self.grading_usd)

    @property
    def grading_exceeds_savings(self) -> bool:
        """Flag: grading costs more than routing saves."""
        return self.savings_usd is not None and self.grading_usd > self.savings_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_class": self.task_class,
            "requests": self.requests,
            "sampled": self.sampled,
            "sample_rate": self.sample_rate,
            "savings_usd": self.savings_usd,
            "grading_usd": self.grading_usd,
            "break_even_rate": self.break_even_rate,
            "grading_exceeds_savings": self.grading_exceeds_savings,
        }


@dataclass(frozen=True, slots=True)
class CostReport:
    """A cost view: its range (UTC; None = open), grouping, premium model, rows sorted by key,
    the totals over the whole range, and every class's economics."""

    since: datetime | None
    until: datetime | None
    group_by: tuple[str, ...]
    premium_model: str | None
    rows: list[CostRow]
    totals: CostRow
    classes: list[ClassEconomics] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /v1/costs`` and ``tierwise costs --json``."""
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "group_by": list(self.group_by),
            "premium_model": self.premium_model,
            "totals": self.totals.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
            "classes": [c.to_dict() for c in self.classes],
        }


def _utc_day(column: Any, dialect: str) -> ColumnElement[str]:
    """The UTC day (``YYYY-MM-DD``) of a ``UTCDateTime`` column: SQLite stores UTC ISO text,
    PostgreSQL a ``timestamptz`` (converted to UTC first, whatever the session's time zone)."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d", column)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def _key_columns(
    group_by: Sequence[str], dialect: str, when: Any, served_model: Any
) -> list[ColumnElement[Any]]:
    cols: dict[str, Any] = {
        "day": _utc_day(when, dialect),
        "task_class": col(Decision.task_class),
        "model": served_model,
        "tier": col(Decision.tier),
        "caller": col(Decision.caller),
    }
    return [cols[k].label(k) for k in group_by]


def _in_range(when: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conds = []
    if since is not None:
        conds.append(when >= since)
    if until is not None:
        conds.append(when < until)
    return conds


def _cache_hit() -> ColumnElement[bool]:
    """The row's cache lookup was a hit (false without one: an outer join's NULL)."""
    return col(CacheLookup.outcome) == "hit"


def _priced(column: Any) -> Any:
    """The column's sum over priced outcomes only (for the counterfactual)."""
    return func.coalesce(func.sum(sa.case((col(Outcome.cost_nusd).is_(None), 0), else_=column)), 0)


async def _outcome_groups(
    session: AsyncSession,
    group_by: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    premium_model: str | None,
    history: Sequence[ModelPrice],
) -> list[tuple[Any, ...]]:
    """Per group and premium price period: the group's keys, the period's index in ``history``
    (-1: no premium price then), then counts, token sums and the serving sum."""
    conn = await session.connection()
    dialect = conn.dialect.name
    keys = _key_columns(group_by, dialect, col(Outcome.created_at), col(Outcome.served_model))
    period = price_period(col(Decision.created_at), history)
    premium = (
        func.coalesce(func.sum(sa.case((col(Decision.model) == premium_model, 1), else_=0)), 0)
        if premium_model is not None
        else sa.literal(0)
    )
    stmt = (
        sa.select(
            *keys,
            period,
            func.count(),
            func.count() - func.count(col(Outcome.cost_nusd)),
            func.coalesce(func.sum(sa.case((col(Decision.sampled), 1), else_=0)), 0),
            premium,
            func.coalesce(func.sum(Outcome.input_tokens), 0),
            func.coalesce(func.sum(Outcome.cached_input_tokens), 0),
            func.coalesce(func.sum(Outcome.cache_write_tokens), 0),
            func.coalesce(func.sum(Outcome.output_tokens), 0),
            func.coalesce(func.sum(Outcome.cost_nusd), 0),
            _priced(col(Outcome.input_tokens)),
            _priced(col(Outcome.cached_input_tokens)),
            _priced(col(Outcome.cache_write_tokens)),
            _priced(col(Outcome.output_tokens)),
            func.count(col(LaneItem.id)),
            func.coalesce(
                func.sum(sa.case((col(LaneItem.id).is_not(None), col(Outcome.cost_nusd)), else_=0)),
                0,
            ),
            func.coalesce(func.sum(col(LaneItem.realtime_cost_nusd) - col(Outcome.cost_nusd)), 0),
            func.count(col(CacheLookup.decision_id)),
            func.coalesce(func.sum(sa.case((_cache_hit(), 1), else_=0)), 0),
            func.coalesce(
                func.sum(sa.case((_cache_hit(), col(CacheLookup.saved_nusd)), else_=0)), 0
            ),
            func.coalesce(func.sum(col(CacheLookup.embedding_nusd)), 0),
        )
        .select_from(Outcome)
        .join(Decision, _decision_of(col(Outcome.decision_id), col(Outcome.decided_at)))
        .outerjoin(LaneItem, col(LaneItem.decision_id) == col(Outcome.decision_id))
        .outerjoin(CacheLookup, col(CacheLookup.decision_id) == col(Outcome.decision_id))
        .where(*_in_range(col(Outcome.created_at), since, until))
        # An outcome comes after its decision: the same bound on the decision's time, so
        # PostgreSQL prunes the day partitions after ``until`` (partition key ``decided_at``).
        .where(*([] if until is None else [col(Outcome.decided_at) < until]))
        .group_by(*keys, period)
    )
    return [tuple(r) for r in (await conn.execute(stmt)).all()]


def _decision_of(decision_id: Any, decided_at: Any) -> Any:
    """The join condition to a row's decision: its id and its time (an outcome's
    ``decided_at`` and a grade's are the decision's ``created_at``), so on PostgreSQL each
    probe goes to one day partition instead of every one."""
    return sa.and_(col(Decision.id) == decision_id, col(Decision.created_at) == decided_at)


async def _grade_groups(
    session: AsyncSession,
    group_by: Sequence[str],
    since: datetime | None,
    until: datetime | None,
) -> list[tuple[Any, ...]]:
    conn = await session.connection()
    dialect = conn.dialect.name
    keys = _key_columns(group_by, dialect, col(Grade.created_at), col(Outcome.served_model))
    shadow = col(Grade.shadow)
    stmt = (
        sa.select(
            *keys,
            func.count(),
            func.count() - func.count(col(Grade.cost_nusd)),
            func.coalesce(func.sum(sa.case((shadow.is_(False), col(Grade.cost_nusd)), else_=0)), 0),
            func.coalesce(func.sum(sa.case((shadow.is_(True), col(Grade.cost_nusd)), else_=0)), 0),
            func.coalesce(func.sum(sa.case((_cache_hit() & shadow.is_(False), 1), else_=0)), 0),
            func.coalesce(
                func.sum(
                    sa.case(
                        (_cache_hit() & shadow.is_(False) & (col(Grade.verdict) == "disagree"), 1),
                        else_=0,
                    )
                ),
                0,
            ),
        )
        .select_from(Grade)
        .join(Decision, _decision_of(col(Grade.decision_id), col(Grade.decided_at)))
        .outerjoin(
            Outcome,
            sa.and_(
                col(Outcome.decision_id) == col(Grade.decision_id),
                col(Outcome.decided_at) == col(Grade.decided_at),
            ),
        )
        .outerjoin(CacheLookup, col(CacheLookup.decision_id) == col(Grade.decision_id))
        .where(*_in_range(col(Grade.created_at), since, until))
    )
    if keys:
        stmt = stmt.group_by(*keys)
    return [tuple(r) for r in (await conn.execute(stmt)).all()]


def _rows(
    outcome_rows: Iterable[tuple[Any, ...]],
    grade_rows: Iterable[tuple[Any, ...]],
    group_by: Sequence[str],
    history: Sequence[ModelPrice],
) -> list[CostRow]:
    n = len(group_by)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    names = (
        "requests",
        "unpriced",
        "sampled",
        "premium_requests",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "serving_nusd",
    )
    lane_names = (
        "batch_requests",
        "batch_serving_nusd",
        "batch_saved_nusd",
        "cache_lookups",
        "cache_hits",
        "cache_saved_nusd",
        "embedding_nusd",
    )
    for r in outcome_rows:
        key, period = r[:n], int(r[n])
        v = [int(x or 0) for x in r[n + 1 : n + 10]]
        priced = Usage(*(int(x or 0) for x in r[n + 10 : n + 14]))
        lane = [int(x or 0) for x in r[n + 14 : n + 21]]
        if v[0] == 0:
            continue  # the ungrouped aggregate over no outcome at all
        row = merged.setdefault(key, {"counterfactual_nusd": 0 if history else None})
        for name, value in zip(names + lane_names, v + lane, strict=True):
            row[name] = row.get(name, 0) + value
        counterfactual = cost_nusd(priced, history[period] if period >= 0 else None)
        if priced == Usage():
            counterfactual = counterfactual or 0
        if counterfactual is None or row["counterfactual_nusd"] is None:
            row["counterfactual_nusd"] = None
        else:
            row["counterfactual_nusd"] += counterfactual
    for r in grade_rows:
        key = r[:n]
        if int(r[n] or 0) == 0:
            continue
        merged.setdefault(key, {"counterfactual_nusd": 0 if history else None}).update(
            grades=int(r[n]),
            unpriced_grades=int(r[n + 1] or 0),
            grading_nusd=int(r[n + 2] or 0),
            shadow_grading_nusd=int(r[n + 3] or 0),
            cache_graded_hits=int(r[n + 4] or 0),
            cache_false_hits=int(r[n + 5] or 0),
        )
    out = []
    for key, values in merged.items():
        out.append(
            CostRow(
                key={k: None if v is None else str(v) for k, v in zip(group_by, key, strict=True)},
                **values,
            )
        )
    return sorted(out, key=lambda row: tuple((v is None, v or "") for v in row.key.values()))


async def costs(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: Sequence[str] = (),
) -> CostReport:
    """The cost view over ``[since, until)`` (aware UTC datetimes; None = open), grouped by
    ``group_by`` (names from :data:`GROUP_KEYS`), with the totals and every class's economics.

    The premium model is the latest applied policy's ``premium_model``; its prices are read from
    the ``price`` history, each outcome at the price in effect at its decision's time. Before any
    policy the counterfactual is None.

    Raises:
        InvalidInput: an unknown group key (``field="group_by"``) or ``since`` after ``until``
            (``field="since"``).
    """
    group_by = parse_group_by(list(group_by))
    if since is not None and until is not None and since > until:
        raise InvalidInput("since is after until", field="since")
    policy = await latest_policy(session)
    premium_name = None if policy is None else policy.spec.premium_model
    history: tuple[ModelPrice, ...] = ()
    if premium_name is not None:
        history = (await price_history(session, premium_name)).get(premium_name, ())

    async def view(keys: Sequence[str]) -> list[CostRow]:
        return _rows(
            await _outcome_groups(session, keys, since, until, premium_name, history),
            await _grade_groups(session, keys, since, until),
            keys,
            history,
        )

    rows = await view(group_by)
    totals = await view(())
    by_class = await view(("task_class",))
    return CostReport(
        since=since,
        until=until,
        group_by=group_by,
        premium_model=premium_name,
        rows=rows,
        totals=totals[0] if totals else CostRow(key={}, counterfactual_nusd=0 if history else None),
        classes=[
            ClassEconomics(
                task_class=str(r.key["task_class"]),
                requests=r.requests,
                sampled=r.sampled,
                savings_usd=r.savings_usd,
                grading_usd=r.total_grading_usd,
            )
            for r in by_class
        ],
    )
