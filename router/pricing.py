"""Usage normalisation and pricing: provider-native usage in, nano-USD out.

Prices are USD per 1M tokens (exact ``Decimal``); a cost is a whole number of nano-USD, rounded
half to even once per row (:mod:`router.money`). The two providers count cache tokens differently:

- OpenAI Chat Completions: ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens``;
  ``completion_tokens`` *includes* ``completion_tokens_details.reasoning_tokens``
  (OpenAI API reference, "The chat completion object" / usage).
- Anthropic Messages: ``input_tokens`` *excludes* ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; all three are billed (Anthropic docs, "Prompt caching",
  tracking cache performance).

The usage and cost cases of ``docs/field-cases.md`` are the tests of this module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

from router.errors import InvalidInput
from router.money import NANO_PER_USD, round_nusd, usd

log = logging.getLogger(__name__)

PER_MILLION = 1_000_000
# No single call uses more: the largest context windows are ~2M tokens. A larger count is a bug
# in the caller, and would overflow PostgreSQL's 32-bit integer columns.
MAX_TOKENS_PER_CALL = 100_000_000
_OPENAI_KEYS = ("prompt_tokens", "completion_tokens")
_ANTHROPIC_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cached_input_tokens",
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised token counts of one call.

    ``input_tokens`` are uncached input tokens billed at the input price; ``cached_input_tokens``
    are read from a prompt cache; ``cache_write_tokens`` are written to one; ``output_tokens``
    include ``reasoning_tokens`` (which are informational, never billed twice).
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_input_tokens(self) -> int:
        """Every input token, cached or not."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens


class Priced(Protocol):
    """Anything with the catalog's price columns (``router.models.Model`` or a snapshot row)."""

    @property
    def input_usd_per_mtok(self) -> Decimal: ...
    @property
    def cached_input_usd_per_mtok(self) -> Decimal | None: ...
    @property
    def cache_write_usd_per_mtok(self) -> Decimal | None: ...
    @property
    def output_usd_per_mtok(self) -> Decimal: ...


def _count(obj: Mapping[str, Any] | None, key: str, field: str) -> int:
    """A non-negative integer count; missing or null counts as 0 (docs/field-cases.md)."""
    if obj is None:
        return 0
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{field} must be a whole number of tokens", field=field)
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise InvalidInput(f"{field} must be a whole number of tokens >= 0", field=field)
    if value > MAX_TOKENS_PER_CALL:
        raise InvalidInput(f"{field} must be at most {MAX_TOKENS_PER_CALL:,} tokens", field=field)
    return int(value)


def _details(usage: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any] | None:
    value = usage.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field}.{key} must be an object or null", field=f"{field}.{key}")
    return value


def normalize_usage(usage: Mapping[str, Any] | None, *, field: str = "usage") -> Usage:
    """Map a provider-native usage object to :class:`Usage`.

    Accepts the OpenAI shape (``prompt_tokens``/``completion_tokens`` with optional details), the
    Anthropic shape (``input_tokens``/``output_tokens``/``cache_*_input_tokens``), or tierwise's
    own normalised shape (the Anthropic keys plus ``cached_input_tokens``). Null detail objects and
    null counts are 0. Cached tokens above ``prompt_tokens`` are clamped and logged.

    Raises:
        InvalidInput: a count is negative, fractional, non-numeric or above
            ``MAX_TOKENS_PER_CALL``; the object is not a mapping; or it mixes both shapes.
    """
    if usage is None:
        return Usage()
    if not isinstance(usage, Mapping):
        raise InvalidInput(f"{field} must be an object", field=field)
    anthropic_cache_keys = ("cache_read_input_tokens", "cache_creation_input_tokens")
    if isinstance(usage.get("input_tokens_details"), Mapping) and not any(
        k in usage for k in anthropic_cache_keys
    ):
        # OpenAI Responses API: input_tokens INCLUDES input_tokens_details.cached_tokens and
        # output_tokens includes output_tokens_details.reasoning_tokens (OpenAI API reference,
        # "The response object" / usage) - the Chat Completions rule under other names.
        return normalize_usage(
            {
                "prompt_tokens": usage.get("input_tokens"),
                "completion_tokens": usage.get("output_tokens"),
                "prompt_tokens_details": _details(usage, "input_tokens_details", field),
                "completion_tokens_details": _details(usage, "output_tokens_details", field),
            },
            field=field,
        )
    if not any(k in usage for k in (*_OPENAI_KEYS, *_ANTHROPIC_KEYS)):
        raise InvalidInput(
            f"{field} has none of the token counts tierwise prices (OpenAI prompt_tokens/"
            "completion_tokens, Responses input_tokens/output_tokens, Anthropic input_tokens/"
            "output_tokens); send null when usage is unknown",
            field=field,
        )
    openai_shape = any(k in usage for k in _OPENAI_KEYS)
    if openai_shape and any(k in usage for k in _ANTHROPIC_KEYS):
        raise InvalidInput(
            f"{field} mixes OpenAI keys (prompt_tokens, completion_tokens) with Anthropic keys "
            "(input_tokens, output_tokens, cache_*); send the provider's object as it came",
            field=field,
        )
    if openai_shape:
        prompt = _count(usage, "prompt_tokens", f"{field}.prompt_tokens")
        completion = _count(usage, "completion_tokens", f"{field}.completion_tokens")
        pdet = _details(usage, "prompt_tokens_details", field)
        cdet = _details(usage, "completion_tokens_details", field)
        cached = _count(pdet, "cached_tokens", f"{field}.prompt_tokens_details.cached_tokens")
        reasoning = _count(
            cdet, "reasoning_tokens", f"{field}.completion_tokens_details.reasoning_tokens"
        )
        if cached > prompt:
            log.warning(
                "cached_tokens %d > prompt_tokens %d; clamping uncached to 0", cached, prompt
            )
            cached = prompt
        return Usage(
            input_tokens=prompt - cached,
            cached_input_tokens=cached,
            output_tokens=completion,
            reasoning_tokens=min(reasoning, completion),
        )
    cached = _count(usage, "cache_read_input_tokens", f"{field}.cache_read_input_tokens")
    cached += _count(usage, "cached_input_tokens", f"{field}.cached_input_tokens")
    return Usage(
        input_tokens=_count(usage, "input_tokens", f"{field}.input_tokens"),
        cached_input_tokens=cached,
        cache_write_tokens=_count(
            usage, "cache_creation_input_tokens", f"{field}.cache_creation_input_tokens"
        ),
        output_tokens=_count(usage, "output_tokens", f"{field}.output_tokens"),
        reasoning_tokens=_count(usage, "reasoning_tokens", f"{field}.reasoning_tokens"),
    )


def cost_nusd(usage: Usage, price: Priced | None, *, discount: Decimal | float = 0) -> int | None:
    """Cost of ``usage`` in whole nano-USD at ``price`` (USD per 1M tokens), less ``discount``
    (a fraction 0..1, e.g. a batch discount of 0.5).

    Exact: ``sum(tokens x price) / 1e6 x (1 - discount)`` is computed as a rational number and
    rounded half to even once, so the result is within 0.5 nano-USD of the exact cost
    (:mod:`router.money`). Returns None when ``price`` is None: an unpriced model is reported as
    unpriced, never as free (docs/field-cases.md). Cached reads and cache writes fall back to the
    input price when the catalog has no specific price. Example: 86 uncached x 2.50 + 1920
    cached x 1.25 + 300 output x 10, per million = 0.005615 USD = 5,615,000 nano-USD.
    """
    if price is None:
        return None
    inp = price.input_usd_per_mtok
    cached_price = price.cached_input_usd_per_mtok
    write_price = price.cache_write_usd_per_mtok
    usd_per_mtok = (
        usage.input_tokens * Fraction(inp)
        + usage.cached_input_tokens * Fraction(inp if cached_price is None else cached_price)
        + usage.cache_write_tokens * Fraction(inp if write_price is None else write_price)
        + usage.output_tokens * Fraction(price.output_usd_per_mtok)
    )
    off = Fraction(Decimal(repr(discount)) if isinstance(discount, float) else discount)
    return round_nusd(usd_per_mtok * NANO_PER_USD / PER_MILLION * (1 - off))


def cost_usd(usage: Usage, price: Priced | None, *, discount: Decimal | float = 0) -> float | None:
    """:func:`cost_nusd` in USD, for display (None = unpriced)."""
    return usd(cost_nusd(usage, price, discount=discount))
