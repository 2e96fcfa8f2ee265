"""Routing policy: the declarative rules, as a file, from (task type, input tokens, tool use) to a
tier and a task class, from tier to model, plus per-class grading settings.

A policy is TOML (see ``router/policies/default.toml`` for the annotated reference). Loading
validates everything up front and names the offending field, so a bad file never reaches the
routing table. Matching is pure and allocation-light: it runs on every route call.
"""

from __future__ import annotations

import fnmatch
import logging
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from router.compression.compressors import COMPRESSORS
from router.errors import PolicyError, field_path
from router.money import price_nusd
from router.offpeak import parse_window, zone
from router.redaction import Redactor, redactor
from router.task_types import DEFAULT_TASK_TYPE

log = logging.getLogger(__name__)

TIERS: tuple[str, ...] = ("trivial", "standard", "complex", "critical")
Grader = Literal[
    "judge_single",
    "judge_pairwise",
    "numeric",
    "recorded_correctness",
    "exact",
    "label",
    "json_fields",
    "choice",
    "reference_answer",
]
# How ``reference_answer`` compares the reference model's own answer with the graded one.
Compare = Literal["exact", "label", "json_fields", "numeric", "choice"]
# Per-field comparison of ``json_fields`` (see evaluator.graders).
JsonFieldMode = Literal["auto", "exact", "numeric", "raw", "unordered"]

# A price below this many USD per 1M tokens is almost surely a per-token price typed into a
# per-million column (2.5e-6 instead of 2.5). The cheapest public API price we know
# (llama-3.1-8b class models, ~0.02-0.06 USD per 1M) is well above it.
MIN_NONZERO_PRICE_PER_MTOK = Decimal("0.001")
MAX_PRICE_PER_MTOK = Decimal(1000)
# A daily grading budget above this (USD) is a typo, and it keeps nano-USD within a bigint.
MAX_GRADING_BUDGET_USD = 1_000_000.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Strict):
    """A catalog entry. Prices are exact decimal USD per 1M tokens (a TOML float such as 0.15 is
    read as ``Decimal("0.15")``, its shortest text, never as the binary float), at most 9
    decimals (whole nano-USD per 1M tokens, :mod:`router.money`); NULL cached/cache-write = the
    input price; NULL embedding input = no embedding price.

    ``name`` is tierwise's name for the model (the routing table, the books); ``provider`` picks
    the adapter (``router.providers.ProviderRegistry``); ``api_model`` is the id the provider's
    API expects (default: ``name``; e.g. ``claude-3-5-sonnet-20241022`` for
    ``claude-3-5-sonnet``); ``aliases`` are the other names a provider reports back for it
    (dated ids such as ``gpt-4o-mini-2024-07-18``), so an outcome naming one is priced and graded
    as this model. ``batch_discount`` is the fraction a provider's batch API takes off.

    ``effective_from`` (UTC; a TOML date is that day's UTC midnight, a datetime without an
    offset is UTC): when these prices start to apply. None = from the moment the policy is
    applied (:func:`router.table.apply_policy`, which refuses a date in the past). In a price
    history (:attr:`router.table.RoutingSnapshot.prices`) it is the row's own date.
    """

    name: str = Field(min_length=1, max_length=128)
    provider: str = Field(min_length=1, max_length=64)
    api_model: str | None = Field(default=None, min_length=1, max_length=128)
    aliases: tuple[str, ...] = Field(default=(), max_length=32)
    input_usd_per_mtok: Decimal = Field(ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False)
    output_usd_per_mtok: Decimal = Field(ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False)
    cached_input_usd_per_mtok: Decimal | None = Field(
        default=None, ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False
    )
    cache_write_usd_per_mtok: Decimal | None = Field(
        default=None, ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False
    )
    embedding_input_usd_per_mtok: Decimal | None = Field(
        default=None, ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False
    )
    batch_discount: Decimal = Field(default=Decimal("0.5"), ge=0, lt=1, allow_inf_nan=False)
    effective_from: datetime | None = None

    @field_validator(
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "cache_write_usd_per_mtok",
        "embedding_input_usd_per_mtok",
    )
    @classmethod
    def _per_million(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and 0 < v < MIN_NONZERO_PRICE_PER_MTOK:
            raise ValueError(
                f"{v} USD per 1M tokens looks like a per-token price; prices are per 1M tokens"
            )
        price_nusd(v)  # at most 9 decimals: raises ValueError
        return v

    @field_validator("effective_from", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime.combine(v, time(0), tzinfo=UTC)
        return v

    @field_validator("effective_from")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    def same_prices(self, other: ModelPrice) -> bool:
        """Whether ``other`` has the same prices and batch discount (names and dates aside)."""
        return self.price_key() == other.price_key()

    def price_key(self) -> tuple[Decimal | None, ...]:
        """The prices and the batch discount, in a fixed order (for comparing two entries)."""
        return (
            self.input_usd_per_mtok,
            self.cached_input_usd_per_mtok,
            self.cache_write_usd_per_mtok,
            self.output_usd_per_mtok,
            self.embedding_input_usd_per_mtok,
            self.batch_discount,
        )


class Rule(_Strict):
    """First matching rule wins. ``input_tokens_below`` is exclusive; ``tools`` None = either."""

    task_types: list[str] = Field(min_length=1)
    tier: str
    input_tokens_below: int | None = Field(default=None, gt=0)
    tools: bool | None = None
    class_suffix: str = ""


class JudgeCalibrationSetting(_Strict):
    """``judge_calibration``: a judge's measured agreement with human labels, as
    ``tierwise eval judge --write-policy`` records it. ``judge`` is the catalog model measured
    (it applies to a class only while that model is the class's reference model, its judge);
    ``kappa`` Cohen's kappa with its ``ci_low``/``ci_high`` interval (95%, Fleiss-Cohen-Everitt)
    over ``n`` labelled items of ``dataset``, measured on ``measured_on`` (a TOML date, UTC).
    A judge-graded class escalates only while ``kappa`` >= ``min_judge_kappa``
    (evaluator.calibration.may_escalate); it takes precedence over a hand-set ``judge_kappa``.
    """

    judge: str = Field(min_length=1, max_length=128)
    kappa: float = Field(ge=-1, le=1, allow_inf_nan=False)
    ci_low: float | None = Field(default=None, ge=-1, le=1, allow_inf_nan=False)
    ci_high: float | None = Field(default=None, ge=-1, le=1, allow_inf_nan=False)
    n: int = Field(ge=1)
    dataset: str = Field(min_length=1, max_length=200)
    measured_on: date

    @field_validator("measured_on", mode="before")
    @classmethod
    def _day(cls, v: Any) -> Any:
        if isinstance(v, datetime):
            raise ValueError("must be a date (YYYY-MM-DD), not a date and time")
        return v

    @model_validator(mode="after")
    def _interval(self) -> JudgeCalibrationSetting:
        if self.ci_low is not None and self.ci_low > self.kappa:
            raise ValueError(f"ci_low ({self.ci_low}) is above kappa ({self.kappa})")
        if self.ci_high is not None and self.ci_high < self.kappa:
            raise ValueError(f"ci_high ({self.ci_high}) is below kappa ({self.kappa})")
        return self


class ClassSettings(_Strict):
    """Per-class grading and escalation settings (defaults, or an override matched by glob)."""

    sample_rate: float = Field(default=0.05, ge=0, le=1)
    threshold: float = Field(default=0.03, gt=0, lt=1, allow_inf_nan=False)
    min_samples: int = Field(default=30, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    grader: Grader = "judge_single"
    pass_mark: float = Field(default=7.0, ge=1, le=10)
    reference_model: str | None = None
    # Grader settings (evaluator.graders): the comparison of ``reference_answer``; numeric
    # tolerances (relative, absolute); the class's labels (whole-token label matching) and
    # synonyms ``{canonical: [variant, ...]}``; the JSON fields compared (dotted paths, ``*`` for
    # every list element; None = every field of the reference's JSON); multiple-choice letters.
    compare: Compare = "exact"
    numeric_tolerance: float = Field(default=1e-6, ge=0, lt=1, allow_inf_nan=False)
    numeric_abs_tolerance: float = Field(default=1e-9, ge=0, allow_inf_nan=False)
    labels: list[str] | None = None
    synonyms: dict[str, list[str]] = Field(default_factory=dict)
    json_fields: dict[str, JsonFieldMode] | None = None
    choice_letters: str = Field(default="ABCD", pattern=r"^[A-Z]{2,26}$")
    # The judge's measured Cohen's kappa against human labels (``tierwise eval judge``) and the
    # floor below which a judge-graded class grades but cannot escalate
    # (evaluator.calibration.may_escalate).
    judge_kappa: float | None = Field(default=None, ge=-1, le=1, allow_inf_nan=False)
    min_judge_kappa: float = Field(default=0.6, ge=-1, le=1, allow_inf_nan=False)
    # The measured calibration of the class's judge with its provenance (JudgeCalibrationSetting;
    # written by ``tierwise eval judge --write-policy``); wins over judge_kappa.
    judge_calibration: JudgeCalibrationSetting | None = None
    # The sequential escalation rule (evaluator.sequential): H0 rate <= p0 against H1 rate >= p1;
    # alpha/beta of Wald's SPRT for a fresh class; arl0_days = mean days between false
    # escalations at p0 (the decision limit follows the class's graded volume) unless a fixed
    # decision_limit (nats) is set; half-life of the evidence (days, None = no forgetting); back
    # down after deescalate_windows windows of window_hours at or below lower_level (None = p0);
    # escalate one ladder step ("next") or straight to the top ("top").
    p0: float = Field(default=0.02, gt=0, lt=1)
    p1: float = Field(default=0.05, gt=0, lt=1)
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    beta: float = Field(default=0.10, gt=0, lt=0.5)
    arl0_days: float = Field(default=3650.0, gt=0, allow_inf_nan=False)
    decision_limit: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    half_life_days: float | None = Field(default=60.0, gt=0, allow_inf_nan=False)
    lower_level: float | None = Field(default=None, gt=0, lt=1)
    deescalate_windows: int = Field(default=3, ge=1)
    window_hours: float = Field(default=24.0, gt=0, allow_inf_nan=False)
    escalate_to: Literal["next", "top"] = "next"
    # The class's daily grading budget (USD per UTC day; None = unlimited): reference calls,
    # judge calls and shadow probes of this class are admitted only while their estimated cost
    # fits what is left (evaluator.grading._budget). The policy's top-level setting of the same
    # name caps every class together.
    grading_budget_usd_per_day: float | None = Field(
        default=None, ge=0, le=MAX_GRADING_BUDGET_USD, allow_inf_nan=False
    )
    # How the class's grading calls reach the reference model: "realtime" (one call at a time,
    # the grading job) or "batch" (the providers' batch APIs at the catalog's batch_discount,
    # evaluator.grading.batch: cheaper, but a verdict may take up to the 24 h window).
    grading: Literal["realtime", "batch"] = "realtime"
    # Prompt compression (router.compression, the gateway's compression stage): the compressors
    # run in order (redundancy, query, tfidf, structural; empty = off), the target ratio (share
    # of the context's estimated tokens kept), the near-duplicate cut (cosine), the smallest
    # request worth compressing (estimated input tokens), the extraction guard (None = on for
    # classes whose name holds "extract"), whether a critical-tier class is compressed, and the
    # quality guard: the share of compressed calls also answered uncompressed and graded, by the
    # served model ("model") or the class's reference model ("reference").
    compression: list[str] = Field(default_factory=list)
    compression_ratio: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    compression_similarity: float = Field(default=0.85, gt=0, lt=1, allow_inf_nan=False)
    compression_min_tokens: int = Field(default=500, ge=0)
    extraction_guard: bool | None = None
    compress_critical: bool = False
    compression_probe_rate: float = Field(default=0.05, ge=0, le=1, allow_inf_nan=False)
    compression_probe_model: Literal["model", "reference"] = "model"

    @field_validator("compression")
    @classmethod
    def _known_compressors(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in COMPRESSORS or name == "random":
                known = ", ".join(sorted(n for n in COMPRESSORS if n != "random"))
                raise ValueError(f"unknown compressor '{name}' (known: {known})")
        if len(set(v)) != len(v):
            raise ValueError("a compressor is named twice")
        return v

    # The lane of the class's gateway calls: "realtime" (answered in the call), "batch"
    # (deferred: queued durably and answered 202 with a result URL, sent through the
    # providers' batch APIs at the catalog's batch_discount; router.lane) or "flex" (answered
    # in the call through OpenAI's flex processing where the model is OpenAI's: slower, at the
    # batch discount; real time when flex has no capacity). A call may ask for a lane itself
    # with the header X-Tierwise-Lane.
    lane: Literal["realtime", "batch", "flex"] = "realtime"
    # With lane_off_peak, deferred calls are sent only inside off_peak_window ("HH:MM-HH:MM",
    # local time in lane_timezone, an IANA zone; it may wrap midnight and follows the zone's
    # daylight-saving changes).
    lane_off_peak: bool = False
    off_peak_window: str = "22:00-06:00"
    lane_timezone: str = "UTC"

    @field_validator("off_peak_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value

    @field_validator("lane_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    # Data lifecycle (router.redaction, evaluator.lifecycle): a sample's text (input messages,
    # the answer, the judge's raw output) is deleted text_retention_days days after it is stored,
    # its grade kept; 0 = the text is never stored (nothing is queued, so the class is not
    # graded). redact: built-in patterns replaced before the text is stored ("email", "phone",
    # "card": Luhn-checked); redact_patterns: further regular expressions (Python re), each match
    # replaced by "[redacted]".
    text_retention_days: int = Field(default=30, ge=0, le=36500)
    redact: list[Literal["email", "phone", "card"]] = Field(default_factory=list)
    redact_patterns: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        Redactor((), patterns)  # raises ValueError naming the pattern's index
        return patterns

    @property
    def redactor(self) -> Redactor:
        """The class's redaction, compiled once (:func:`router.redaction.redactor`)."""
        return redactor(tuple(self.redact), tuple(self.redact_patterns))

    # The semantic cache (router.cache): whether the class's answers are cached at all (false:
    # never stored, never served from the cache, e.g. compliance); how long an entry lives
    # (seconds); the cosine similarity a semantic hit needs to start with (the quality guard,
    # evaluator.cache_guard, raises and lowers it per class); the highest request temperature
    # still cached (None = any); the share of hits graded like any cheap answer (chosen by a
    # hash of the decision id); and the false-hit rate the guard keeps the rate's upper 95%
    # bound under.
    cache: bool = True
    cache_ttl_s: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)
    cache_threshold: float = Field(default=0.92, gt=0, le=1, allow_inf_nan=False)
    cache_max_temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_sample_rate: float = Field(default=0.05, ge=0, le=1)
    cache_false_hit_target: float = Field(default=0.01, gt=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _rule_band(self) -> ClassSettings:
        lower = self.p0 if self.lower_level is None else self.lower_level
        if not self.p0 < self.p1:
            raise ValueError(f"p0 ({self.p0}) must be below p1 ({self.p1})")
        if not lower < self.threshold:
            raise ValueError(
                f"lower_level (or p0) {lower} must be below threshold {self.threshold}"
            )
        return self


class ClassOverride(_Strict):
    """Settings for the task classes matching ``match`` (a shell glob, e.g. ``mt_bench.*``).

    Any :class:`ClassSettings` field may be given; each override is validated at load time as
    the defaults overlaid with it, so its values obey the same constraints.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    match: str = Field(min_length=1)

    @model_validator(mode="after")
    def _known_settings(self) -> ClassOverride:
        unknown = sorted(set(self.model_extra or {}) - set(ClassSettings.model_fields))
        if unknown:
            raise ValueError(f"unknown class setting(s): {', '.join(unknown)}")
        return self

    @property
    def overrides(self) -> dict[str, Any]:
        """The settings this override sets, by name."""
        return dict(self.model_extra or {})


class PolicyFile(_Strict):
    """The whole policy file, validated."""

    name: str = Field(min_length=1)
    default_tier: str = "standard"
    premium_model: str
    tier_models: dict[str, str]
    ladder: list[str] = Field(min_length=1)
    models: list[ModelPrice] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    defaults: ClassSettings = Field(default_factory=ClassSettings)
    classes: list[ClassOverride] = Field(default_factory=list)
    grading_budget_usd_per_day: float | None = Field(
        default=None,
        ge=0,
        le=MAX_GRADING_BUDGET_USD,
        allow_inf_nan=False,
        description="grading spend of every class together, USD per UTC day (None = unlimited)",
    )
    unknown_task_types: Literal["default", "reject"] = Field(
        default="default",
        description="a task type no rule names and no [[classes]] glob matches: 'default' "
        "routes it as the task type 'default' (counted, warned about once), 'reject' refuses "
        "it (422 naming task_type, with the known task types)",
    )
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="model -> the models the gateway tries next, in order, when a call to it "
        "fails before the first byte (429, 5xx, a timeout, a refused connection)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PolicyFile:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: duplicate model name")
        known = set(names)
        seen: dict[str, str] = {}
        for i, m in enumerate(self.models):
            others = [("aliases", a) for a in m.aliases]
            if m.api_model is not None and m.api_model != m.name:
                others.append(("api_model", m.api_model))
            for where, alias in others:
                owner = seen.get(alias) or (alias if alias in known else None)
                if owner is not None:
                    raise ValueError(
                        f"models[{i}].{where}: '{alias}' already names model '{owner}'"
                    )
                seen[alias] = m.name
        for tier in TIERS:
            if tier not in self.tier_models:
                raise ValueError(f"tier_models: missing tier '{tier}'")
        for tier, model in self.tier_models.items():
            if tier not in TIERS:
                raise ValueError(f"tier_models.{tier}: unknown tier (tiers: {', '.join(TIERS)})")
            if model not in known:
                raise ValueError(f"tier_models.{tier}: model '{model}' is not in models")
        if self.default_tier not in TIERS:
            raise ValueError(f"default_tier: unknown tier '{self.default_tier}'")
        for i, rule in enumerate(self.rules):
            if rule.tier not in TIERS:
                raise ValueError(f"rules[{i}].tier: unknown tier '{rule.tier}'")
        for i, model in enumerate(self.ladder):
            if model not in known:
                raise ValueError(f"ladder[{i}]: model '{model}' is not in models")
            if model in self.ladder[:i]:
                raise ValueError(f"ladder[{i}]: model '{model}' is on the ladder twice")
        if self.premium_model not in known:
            raise ValueError(f"premium_model: model '{self.premium_model}' is not in models")
        for model, chain in self.fallbacks.items():
            if model not in known:
                raise ValueError(f"fallbacks.{model}: model '{model}' is not in models")
            for i, other in enumerate(chain):
                if other not in known:
                    raise ValueError(f"fallbacks.{model}[{i}]: model '{other}' is not in models")
                if other == model or other in chain[:i]:
                    raise ValueError(
                        f"fallbacks.{model}[{i}]: '{other}' is already in the chain of '{model}'"
                    )
        refs = [self.defaults.reference_model] + [
            c.overrides.get("reference_model") for c in self.classes
        ]
        for ref in refs:
            if ref is not None and ref not in known:
                raise ValueError(f"reference_model: model '{ref}' is not in models")
        judged = [("defaults", self.defaults.judge_calibration)] + [
            (f"classes[{i}]", c.overrides.get("judge_calibration"))
            for i, c in enumerate(self.classes)
        ]
        for where, cal in judged:
            judge = cal.judge if isinstance(cal, JudgeCalibrationSetting) else None
            if isinstance(cal, dict):
                judge = cal.get("judge")
            if isinstance(judge, str) and judge not in known:
                raise ValueError(
                    f"{where}.judge_calibration.judge: model '{judge}' is not in models"
                )
        for i, override in enumerate(self.classes):  # each override over the defaults
            try:
                ClassSettings(**{**self.defaults.model_dump(), **override.overrides})
            except ValidationError as exc:
                err = exc.errors()[0]
                where = field_path(err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                raise ValueError(f"classes[{i}]{'.' + where if where else ''}: {msg}") from exc
        return self


@dataclass(frozen=True, slots=True)
class Match:
    """Result of matching a request against the policy."""

    task_class: str
    tier: str
    reason: str


class Policy:
    """A loaded, validated policy with matching helpers. Immutable after construction."""

    def __init__(self, spec: PolicyFile, body: str) -> None:
        self.spec = spec
        self.body = body
        self._by_type: dict[str, list[tuple[int, Rule]]] = {}
        for i, rule in enumerate(spec.rules):
            for task_type in rule.task_types:
                self._by_type.setdefault(task_type, []).append((i, rule))
        self._settings_cache: dict[str, ClassSettings] = {}
        self._known_cache: dict[str, bool] = {}
        self._globs = tuple(c.match for c in spec.classes)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def prices(self) -> dict[str, ModelPrice]:
        return {m.name: m for m in self.spec.models}

    def match(self, task_type: str, input_tokens: int, has_tool_calls: bool) -> Match:
        """Map a request to (task class, tier, reason). First matching rule wins."""
        for i, rule in self._by_type.get(task_type, ()):
            if rule.input_tokens_below is not None and input_tokens >= rule.input_tokens_below:
                continue
            if rule.tools is not None and rule.tools != has_tool_calls:
                continue
            return Match(task_type + rule.class_suffix, rule.tier, f"rules[{i}]")
        return Match(task_type, self.spec.default_tier, "default_tier")

    def is_known(self, task_type: str) -> bool:
        """Whether the policy knows ``task_type``: a rule names it, a ``[[classes]]`` glob
        matches it (as the task class it would be without a rule), or it is ``default``
        (:data:`router.task_types.DEFAULT_TASK_TYPE`). Cached; no I/O."""
        known = self._known_cache.get(task_type)
        if known is None:
            known = (
                task_type in self._by_type
                or task_type == DEFAULT_TASK_TYPE
                or any(fnmatch.fnmatchcase(task_type, g) for g in self._globs)
            )
            if len(self._known_cache) < 100_000:
                self._known_cache[task_type] = known
        return known

    def known_task_types(self) -> list[str]:
        """What :meth:`is_known` accepts, for an error message: the rules' task types, then
        the ``[[classes]]`` globs, then ``default``."""
        named = list(dict.fromkeys(t for r in self.spec.rules for t in r.task_types))
        return [*named, *(g for g in self._globs if g not in named), DEFAULT_TASK_TYPE]

    def fallback_chain(self, model: str) -> tuple[str, ...]:
        """``model`` then the models its ``fallbacks`` entry names, in order (just ``model``
        when it has none). The chain of the model actually chosen: an escalated class falls
        back along its new model's chain."""
        return (model, *self.spec.fallbacks.get(model, ()))

    def model_for_tier(self, tier: str) -> str:
        return self.spec.tier_models[tier]

    def settings_for(self, task_class: str) -> ClassSettings:
        """Defaults overlaid with every matching ``[[classes]]`` override, in file order.

        Never raises (it runs on every route call): an override that would make the merged
        settings invalid together with an earlier one (two globs that overlap, e.g. p0 from one
        and threshold from another) is skipped and logged. :func:`parse_policy` refuses such a
        policy for every class its rules and globs name, so this only catches classes no rule
        names.
        """
        cached = self._settings_cache.get(task_class)
        if cached is not None:
            return cached
        settings, conflict = self._merge(task_class)
        if conflict is not None:
            log.error("policy %s: %s; that override is skipped", self.name, conflict)
        if len(self._settings_cache) < 100_000:
            self._settings_cache[task_class] = settings
        return settings

    def _merge(self, task_class: str) -> tuple[ClassSettings, str | None]:
        """Merged settings of ``task_class`` and the first conflict met (None if none)."""
        settings = self.spec.defaults
        conflict = None
        for i, override in enumerate(self.spec.classes):
            if not fnmatch.fnmatchcase(task_class, override.match):
                continue
            try:
                settings = ClassSettings(**{**settings.model_dump(), **override.overrides})
            except ValidationError as exc:
                msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                conflict = conflict or f"classes[{i}] for class '{task_class}': {msg}"
        return settings, conflict

    def check_overlaps(self) -> None:
        """Merge the settings of every class the rules name and of every glob taken as a class
        name, so overlapping overrides that conflict are refused at load.

        Raises:
            PolicyError: a class's merged settings are invalid (names the override).
        """
        names = {t + r.class_suffix for r in self.spec.rules for t in r.task_types}
        names |= {c.match for c in self.spec.classes}
        for name in sorted(names):
            _, conflict = self._merge(name)
            if conflict is not None:
                raise PolicyError(conflict, field="classes")

    def reference_model(self, task_class: str) -> str:
        """The class's reference model: its setting, else the premium model."""
        return self.settings_for(task_class).reference_model or self.spec.premium_model

    def previous_model(self, model: str) -> str | None:
        """The next cheaper model on the ladder (shadow probes and a return go there), or None
        at the bottom / off the ladder."""
        ladder = self.spec.ladder
        if model not in ladder:
            return None
        i = ladder.index(model)
        return ladder[i - 1] if i > 0 else None

    def top_model(self) -> str:
        """The strongest model on the ladder."""
        return self.spec.ladder[-1]

    def next_model(self, model: str) -> str | None:
        """The next stronger model on the ladder, or None at the top / off the ladder."""
        ladder = self.spec.ladder
        if model not in ladder:
            return None
        i = ladder.index(model)
        return ladder[i + 1] if i + 1 < len(ladder) else None


def parse_policy(body: str, *, source: str = "<policy>") -> Policy:
    """Parse and validate TOML policy text.

    Raises:
        PolicyError: TOML syntax error, or a field fails validation; ``field`` names it
            (e.g. ``rules.2.tier``).
    """
    try:
        raw = tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    try:
        spec = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = field_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc and ": " in msg:  # a cross-field check names its field first: "ladder[2]: ..."
            loc, msg = msg.split(": ", 1)
        where = f"{loc}: " if loc else ""
        raise PolicyError(f"{source}: {where}{msg}", field=loc or None) from exc
    policy = Policy(spec, body)
    policy.check_overlaps()
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file. Raises PolicyError (also for a missing file)."""
    p = Path(path)
    try:
        body = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {p} is not UTF-8 text: {exc.reason}") from exc
    return parse_policy(body, source=str(p))


def builtin_policy_path(name: str) -> Path:
    """Path of a policy shipped with tierwise (``default`` or ``replay``)."""
    return Path(__file__).parent / "policies" / f"{name}.toml"


def builtin_policy_names() -> list[str]:
    """Names of the policies shipped with tierwise, sorted: ``["default", "replay"]``."""
    return sorted(p.stem for p in (Path(__file__).parent / "policies").glob("*.toml"))
