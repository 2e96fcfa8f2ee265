"""Deterministic sampling by a hash of the decision id (docs/field-cases.md)."""

from __future__ import annotations

import random

from router.sampling import is_sampled, sample_point

SAMPLE_POINT_DECISION_1 = 0.3262336137895553
SAMPLE_POINT_HEX = 0.799479299340421


def _ids(n: int) -> list[str]:
    rng = random.Random(20261129)
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


def test_same_id_same_answer() -> None:
    for decision_id in _ids(1000):
        assert is_sampled(decision_id, 0.03) == is_sampled(decision_id, 0.03)
        assert sample_point(decision_id) == sample_point(decision_id)


def test_three_percent_is_a_subset_of_five_percent() -> None:
    ids = _ids(20_000)
    at3 = {i for i in ids if is_sampled(i, 0.03)}
    at5 = {i for i in ids if is_sampled(i, 0.05)}
    assert at3 <= at5
    assert len(at5) > len(at3)


def test_count_at_three_percent_is_binomial() -> None:
    # Binomial(100000, 0.03): mean 3000, s.d. 54; the exact count for these seeded ids is fixed.
    picked = sum(is_sampled(i, 0.03) for i in _ids(100_000))
    assert abs(picked - 3000) <= 3 * 54
    assert picked == sum(is_sampled(i, 0.03) for i in _ids(100_000))


def test_rate_zero_picks_none_and_one_picks_all() -> None:
    ids = _ids(10_000)
    assert not any(is_sampled(i, 0.0) for i in ids)
    assert all(is_sampled(i, 1.0) for i in ids)


def test_sample_point_is_the_same_on_every_replica() -> None:
    # Pinned values: a change of hash (or a salted one) would make replicas disagree.
    assert sample_point("decision-1") == SAMPLE_POINT_DECISION_1
    assert sample_point("0123456789abcdef0123456789abcdef") == SAMPLE_POINT_HEX
