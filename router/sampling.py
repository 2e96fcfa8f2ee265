"""Deterministic sampling by a hash of the decision id (docs/field-cases.md).

``is_sampled(id, r)`` maps the id to a uniform point u in [0, 1) by the first 8 bytes of its
BLAKE2b digest and samples when u < r. So a retry of the same id gets the same answer, every id
sampled at 3% is sampled at 5% (u < 0.03 implies u < 0.05), a rate of 0 samples nothing, and over
n random ids the count is Binomial(n, r): 3,000 +- 54 (one s.d.) of 100,000 at 3%.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def sample_point(decision_id: str) -> float:
    """The id's uniform point in [0, 1)."""
    digest = hashlib.blake2b(decision_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def is_sampled(decision_id: str, rate: float) -> bool:
    """True when the decision is in the sample at ``rate`` (a fraction in [0, 1])."""
    return rate > 0.0 and sample_point(decision_id) < rate
