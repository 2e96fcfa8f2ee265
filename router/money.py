"""Exact money: every stored amount is a whole number of nano-USD (1 nUSD = 1e-9 USD).

Prices are decimal numbers of USD per 1M tokens (``Decimal``, parsed from the policy file's text,
never through binary floating point arithmetic) and are stored as whole nano-USD per 1M tokens
(``*_nusd_per_mtok``, so a price may have at most 9 decimals: 0.075 USD per 1M is 75,000,000).
A cost is ``tokens x price / 1e6``: the exact rational value is rounded **half to even, once per
row**, to whole nano-USD (:func:`round_nusd`). So each stored row is within 0.5 nUSD of its exact
cost, and a sum of N rows (an exact integer sum in SQL) is within N x 0.5 nUSD of the exact sum:
10^7 rows are within 0.005 USD, and for a sum to be off by one cent needs more than 2 x 10^7 rows
all rounded the same way (half-even rounding makes the errors of ties cancel on average).

USD is shown only at the edge (API, CLI): :func:`usd` turns nano-USD into a float whose
shortest ``repr`` is the exact decimal for every amount below 10^6 USD (at most 15 significant
digits), so JSON carries the number with up to 9 decimals.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

NANO_PER_USD = 1_000_000_000
PER_MILLION = 1_000_000


def price_nusd(price: Decimal | None) -> int | None:
    """A price in USD per 1M tokens -> whole nano-USD per 1M tokens (None stays None).

    Raises:
        ValueError: the price has more than 9 decimals (it is not a whole number of nano-USD).
    """
    if price is None:
        return None
    scaled = price * NANO_PER_USD
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{price} USD per 1M tokens has more than 9 decimals")
    return int(scaled)


def price_usd(nusd_per_mtok: int | None) -> Decimal | None:
    """Whole nano-USD per 1M tokens -> the exact price in USD per 1M tokens (None stays None)."""
    if nusd_per_mtok is None:
        return None
    exact = (Decimal(nusd_per_mtok) / NANO_PER_USD).normalize()
    # normalize() writes whole numbers with an exponent (1E+1); quantize back to plain digits.
    return exact.quantize(Decimal(1)) if exact == exact.to_integral_value() else exact


def round_nusd(value: Fraction) -> int:
    """An exact amount of nano-USD rounded half to even to a whole number of nano-USD."""
    return round(value)


def usd(nusd: int | None) -> float | None:
    """Nano-USD -> USD for display and JSON (None stays None); exact decimal below 10^6 USD."""
    if nusd is None:
        return None
    return float(Decimal(nusd) / NANO_PER_USD)


def usd_decimal(nusd: int) -> Decimal:
    """Nano-USD -> the exact amount in USD as a ``Decimal``."""
    return Decimal(nusd) / NANO_PER_USD


def nusd_of_usd(amount: float | Decimal | str) -> int:
    """USD (a float of an older row, a ``Decimal`` or its text) -> nano-USD, half to even: a
    float is read as its shortest decimal ``repr`` (0.1 is 0.1, not 0.1000000000000000055...).
    """
    dec = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    return round(Fraction(dec) * NANO_PER_USD)
