"""The what-if calculator: a workload file (daily volumes and token sizes per task) priced before
and after routing through a policy, as a cost review would.

**Before**: every request on the workload's ``baseline_model``, real-time, no cache:
``requests/day x (input_tokens x input price + output_tokens x output price) / 1M``.

**After**: each task routed through the policy, :meth:`router.policy.Policy.match` on its task
type, its input tokens and no tool use -> tier -> ``tier_models``. The routing table's later
changes (escalations, pins, overrides) do not apply: this is the policy as written. Then:

- cache hits removed: effective requests = requests/day x (1 - cache_hit_rate);
- every request of a task with a cache (cache_hit_rate > 0) pays one embedding of its input for
  the lookup, hit or miss (a miss needs the lookup too), at the workload file's
  ``embedding_usd_per_mtok`` (the catalog has no embedding price yet; absent = not charged, and
  the output says so);
- a batchable task's model cost less the catalog's ``batch_discount`` of the routed model.

Provider prompt caching (cached-input prices) is not modelled: every input token is priced at the
input price. Money is float USD per day (exact money is separate work).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.errors import InvalidInput, field_path
from router.policy import MAX_PRICE_PER_MTOK, ModelPrice, Policy
from router.pricing import PER_MILLION


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkloadTask(_Strict):
    """One task of a workload: daily volume, tokens per request, batchable, cache hit rate."""

    name: str = Field(min_length=1, max_length=200)
    task_type: str = Field(min_length=1, max_length=200)
    requests_per_day: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    batchable: bool = False
    cache_hit_rate: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    has_tool_calls: bool = False


class Workload(_Strict):
    """A workload file: ``baseline_model`` (a catalog model), ``[[task]]`` entries, and the
    optional embedding price (USD per 1M tokens) of the cache lookups."""

    baseline_model: str = Field(min_length=1)
    embedding_model: str | None = None
    embedding_usd_per_mtok: float | None = Field(
        default=None, ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False
    )
    task: list[WorkloadTask] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Workload:
        seen: set[str] = set()
        for i, t in enumerate(self.task):
            if t.name in seen:
                raise ValueError(f"task[{i}].name: {t.name!r} is given twice")
            seen.add(t.name)
        return self


def parse_workload(body: str, *, source: str = "<workload>") -> Workload:
    """Parse and validate workload TOML.

    Raises:
        InvalidInput: not TOML, or a field fails validation; the message names the file and the
            field (``task[2].cache_hit_rate``), ``field`` the field.
    """
    try:
        raw = tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from exc
    try:
        return Workload.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = field_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc and ": " in msg:
            loc, msg = msg.split(": ", 1)
        raise InvalidInput(
            f"{source}: {loc + ': ' if loc else ''}{msg}", field=loc or None
        ) from exc


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload file.

    Raises:
        InvalidInput: unreadable, not UTF-8, or invalid (see :func:`parse_workload`).
    """
    p = Path(path)
    try:
        body = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read workload file {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"workload file {p} is not UTF-8 text: {exc.reason}") from exc
    return parse_workload(body, source=str(p))


JSON_DECIMALS = 9
"""``--json`` figures are rounded to nano-units (USD, requests), so binary float residue such as
8159.999999999999 does not reach a cost review."""


@dataclass(frozen=True, slots=True)
class TaskCost:
    """One task before and after (USD per day); ``tier`` and ``task_class`` from the policy."""

    name: str
    task_type: str
    task_class: str
    tier: str
    model_before: str
    model_after: str
    requests_per_day: int
    effective_requests_per_day: float
    input_tokens: int
    output_tokens: int
    batchable: bool
    batch_discount: float
    cache_hit_rate: float
    before_usd_per_day: float
    model_usd_per_day: float
    embedding_usd_per_day: float

    @property
    def after_usd_per_day(self) -> float:
        """The routed model's cost (after cache and batch discount) plus the cache lookups."""
        return self.model_usd_per_day + self.embedding_usd_per_day

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape of one task."""
        return {
            "name": self.name,
            "model_before": self.model_before,
            "model_after": self.model_after,
            "requests_per_day": self.requests_per_day,
            "effective_requests_per_day": round(self.effective_requests_per_day, JSON_DECIMALS),
            "before_usd_per_day": round(self.before_usd_per_day, JSON_DECIMALS),
            "after_usd_per_day": round(self.after_usd_per_day, JSON_DECIMALS),
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    """A workload priced before and after, with the prices used (USD per 1M tokens)."""

    policy: str
    workload: Workload
    tasks: list[TaskCost]
    prices: dict[str, ModelPrice]

    @property
    def before_usd_per_day(self) -> float:
        return sum(t.before_usd_per_day for t in self.tasks)

    @property
    def after_usd_per_day(self) -> float:
        return sum(t.after_usd_per_day for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """``{"before_usd_per_day", "after_usd_per_day", "tasks": [...]}``."""
        return {
            "before_usd_per_day": round(self.before_usd_per_day, JSON_DECIMALS),
            "after_usd_per_day": round(self.after_usd_per_day, JSON_DECIMALS),
            "tasks": [t.to_dict() for t in self.tasks],
        }


def _per_request(price: ModelPrice, input_tokens: int, output_tokens: int) -> float:
    """USD of one real-time, uncached request (a float: a projection, not stored money)."""
    return (
        float(input_tokens * price.input_usd_per_mtok + output_tokens * price.output_usd_per_mtok)
        / PER_MILLION
    )


def simulate(workload: Workload, policy: Policy) -> Simulation:
    """Price ``workload`` before (baseline model) and after (routed by ``policy``), per day.

    Raises:
        InvalidInput: ``baseline_model`` is not in the policy's catalog
            (``field="baseline_model"``).
    """
    prices = policy.prices
    baseline = prices.get(workload.baseline_model)
    if baseline is None:
        raise InvalidInput(
            f"baseline_model: {workload.baseline_model!r} is not in policy {policy.name}'s "
            f"catalog ({', '.join(sorted(prices))})",
            field="baseline_model",
        )
    embed = workload.embedding_usd_per_mtok or 0.0
    tasks = []
    for t in workload.task:
        match = policy.match(t.task_type, t.input_tokens, t.has_tool_calls)
        model = policy.model_for_tier(match.tier)
        price = prices[model]
        effective = t.requests_per_day * (1.0 - t.cache_hit_rate)
        discount = float(price.batch_discount) if t.batchable else 0.0
        lookups = t.requests_per_day if t.cache_hit_rate > 0 else 0.0
        tasks.append(
            TaskCost(
                name=t.name,
                task_type=t.task_type,
                task_class=match.task_class,
                tier=match.tier,
                model_before=baseline.name,
                model_after=model,
                requests_per_day=t.requests_per_day,
                effective_requests_per_day=effective,
                input_tokens=t.input_tokens,
                output_tokens=t.output_tokens,
                batchable=t.batchable,
                batch_discount=discount,
                cache_hit_rate=t.cache_hit_rate,
                before_usd_per_day=t.requests_per_day
                * _per_request(baseline, t.input_tokens, t.output_tokens),
                model_usd_per_day=effective
                * _per_request(price, t.input_tokens, t.output_tokens)
                * (1.0 - discount),
                embedding_usd_per_day=lookups * t.input_tokens * embed / PER_MILLION,
            )
        )
    return Simulation(policy=policy.name, workload=workload, tasks=tasks, prices=prices)
