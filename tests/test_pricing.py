"""Usage normalisation and cost, per provider shape (docs/field-cases.md: usage and cost)."""

from __future__ import annotations

import pytest

from router.errors import InvalidInput
from router.policy import ModelPrice
from router.pricing import Usage, cost_usd, normalize_usage


def price(inp: float, out: float, cached: float | None = None) -> ModelPrice:
    return ModelPrice(
        name="m",
        provider="p",
        input_usd_per_mtok=inp,
        output_usd_per_mtok=out,
        cached_input_usd_per_mtok=cached,
    )


def test_openai_cached_tokens_are_inside_prompt_tokens() -> None:
    usage = normalize_usage(
        {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1920},
        }
    )
    assert usage == Usage(input_tokens=86, cached_input_tokens=1920, output_tokens=300)
    assert cost_usd(usage, price(2.50, 10.0, cached=1.25)) == pytest.approx(0.005615, abs=1e-12)


def test_cached_above_prompt_is_clamped(caplog: pytest.LogCaptureFixture) -> None:
    usage = normalize_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 150},
        }
    )
    assert (usage.input_tokens, usage.cached_input_tokens) == (0, 100)
    assert "clamping" in caplog.text


def test_reasoning_tokens_are_inside_completion_tokens() -> None:
    usage = normalize_usage(
        {
            "prompt_tokens": 14746,
            "completion_tokens": 1944,
            "completion_tokens_details": {"reasoning_tokens": 1360},
        }
    )
    assert usage.output_tokens == 1944 and usage.reasoning_tokens == 1360
    assert cost_usd(usage, price(30.0, 180.0)) == pytest.approx(0.7923, abs=1e-12)


@pytest.mark.parametrize(
    "raw",
    [
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": None},
        },
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": None},
        },
    ],
)
def test_null_details_count_as_zero(raw: dict[str, object]) -> None:
    assert normalize_usage(raw) == Usage(input_tokens=10, output_tokens=5)


def test_anthropic_cache_tokens_are_outside_input_tokens() -> None:
    usage = normalize_usage(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 30,
        }
    )
    assert usage == Usage(
        input_tokens=50, cached_input_tokens=1000, cache_write_tokens=200, output_tokens=30
    )
    sonnet = ModelPrice(
        name="s",
        provider="anthropic",
        input_usd_per_mtok=3.0,
        cached_input_usd_per_mtok=0.30,
        cache_write_usd_per_mtok=3.75,
        output_usd_per_mtok=15.0,
    )
    # 50 x 3 + 1000 x 0.30 + 200 x 3.75 + 30 x 15 = 1650, per million.
    assert cost_usd(usage, sonnet) == pytest.approx(0.00165, abs=1e-12)


def test_unknown_price_is_none_not_zero() -> None:
    assert cost_usd(Usage(input_tokens=10), None) is None


def test_per_token_price_is_rejected() -> None:
    with pytest.raises(ValueError, match="per-token"):
        price(0.0000025, 10.0)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"prompt_tokens": -1}, "usage.prompt_tokens"),
        ({"prompt_tokens": 1.5}, "usage.prompt_tokens"),
        ({"prompt_tokens": "12"}, "usage.prompt_tokens"),
        ({"prompt_tokens": 1, "prompt_tokens_details": 7}, "usage.prompt_tokens_details"),
        ({"input_tokens": float("nan")}, "usage.input_tokens"),
    ],
)
def test_bad_counts_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_usage(raw)
    assert info.value.field == field


def test_openai_responses_shape_counts_cached_inside_input() -> None:
    usage = normalize_usage(
        {
            "input_tokens": 2006,
            "output_tokens": 300,
            "input_tokens_details": {"cached_tokens": 1920},
            "output_tokens_details": {"reasoning_tokens": 100},
        }
    )
    assert usage == Usage(
        input_tokens=86, cached_input_tokens=1920, output_tokens=300, reasoning_tokens=100
    )
    assert cost_usd(usage, price(2.50, 10.0, cached=1.25)) == pytest.approx(0.005615, abs=1e-12)


@pytest.mark.parametrize("raw", [{}, {"total_tokens": 5000}, {"promptTokenCount": 10}])
def test_usage_without_known_counts_is_refused_not_free(raw: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match="none of the token counts"):
        normalize_usage(raw)
