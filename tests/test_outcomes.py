"""POST /v1/outcomes: pricing, sampling of text, idempotency, validation (NaN, unpriced)."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest
from sqlmodel import func, select

from router.models import Outcome, Sample
from router.sampling import is_sampled
from tests.conftest import Service

pytestmark = pytest.mark.asyncio

MESSAGES = [{"role": "user", "content": "Is this spam? 'WIN A PRIZE'"}]


async def route(service: Service, sampled: bool) -> dict[str, Any]:
    """Route requests with a fixed sequence of request ids until one is (or is not) sampled."""
    for i in count():
        resp = await service.client.post(
            "/v1/route",
            json={"task_type": "classify", "input_tokens": 40, "request_id": f"test-req-{i:06d}"},
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        assert body["sampled"] == is_sampled(body["decision_id"], 0.05)
        if body["sampled"] == sampled:
            return body
    raise AssertionError


def outcome(decision_id: object, **extra: object) -> dict[str, object]:
    body = {
        "decision_id": decision_id,
        "served_model": "gpt-4o-mini",
        "latency_ms": 412.5,
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1920},
        },
        "input_messages": MESSAGES,
        "output_text": "spam",
    }
    body.update(extra)
    return body


async def counts(service: Service) -> tuple[int, int, float]:
    async with service.sessions() as session:
        n_out = (await session.exec(select(func.count()).select_from(Outcome))).one()
        n_sample = (await session.exec(select(func.count()).select_from(Sample))).one()
        cost = (await session.exec(select(func.coalesce(func.sum(Outcome.cost_nusd), 0)))).one()
    return int(n_out), int(n_sample), float(cost or 0) / 1e9


async def test_sampled_outcome_is_priced_and_queued(service: Service) -> None:
    decision = await route(service, sampled=True)
    assert decision["sampled"] is True
    resp = await service.client.post("/v1/outcomes", json=outcome(decision["decision_id"]))
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"][0]
    # Cached tokens at gpt-4o-mini prices: 86 x 0.15 + 1920 x 0.075 + 300 x 0.60, per million.
    assert result["cost_usd"] == 0.0003369  # exact: a number with at most 9 decimals
    assert result["sample_queued"] is True
    async with service.sessions() as session:
        sample = (await session.exec(select(Sample))).one()
    assert (sample.output_text, sample.input_messages, sample.status) == (
        "spam",
        MESSAGES,
        "queued",
    )


async def test_unsampled_text_is_not_stored(service: Service) -> None:
    decision = await route(service, sampled=False)
    assert decision["sampled"] is False
    resp = await service.client.post("/v1/outcomes", json=outcome(decision["decision_id"]))
    assert resp.json()["results"][0]["sample_queued"] is False
    assert (await counts(service))[:2] == (1, 0)


async def test_replaying_the_same_outcome_changes_nothing(service: Service) -> None:
    decision = await route(service, sampled=True)
    first = await service.client.post("/v1/outcomes", json=outcome(decision["decision_id"]))
    before = await counts(service)
    again = await service.client.post(
        "/v1/outcomes",
        json=[outcome(decision["decision_id"]), outcome(decision["decision_id"], latency_ms=1.0)],
    )
    assert first.json()["stored"] == 1
    assert again.status_code == 200
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 2)
    assert await counts(service) == before


async def test_unknown_decision_stores_nothing_and_names_the_item(service: Service) -> None:
    decision = await route(service, sampled=True)
    resp = await service.client.post(
        "/v1/outcomes", json=[outcome(decision["decision_id"]), outcome("no-such-decision")]
    )
    assert resp.status_code == 404
    assert resp.json()["error"]["field"] == "[1].decision_id"
    assert await counts(service) == (0, 0, 0.0)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_or_infinite_latency_is_a_422_naming_the_field(
    service: Service, literal: str
) -> None:
    decision = await route(service, sampled=False)
    body = (
        f'{{"decision_id": "{decision["decision_id"]}", "served_model": "gpt-4o-mini", '
        f'"latency_ms": {literal}}}'
    )
    resp = await service.client.post(
        "/v1/outcomes", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "latency_ms"
    assert await counts(service) == (0, 0, 0.0)


async def test_bad_usage_in_a_batch_names_index_and_field(service: Service) -> None:
    decision = await route(service, sampled=False)
    resp = await service.client.post(
        "/v1/outcomes",
        json=[outcome(decision["decision_id"], usage={"prompt_tokens": -3})],
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "[0].usage.prompt_tokens"


async def test_unpriced_model_cost_is_null(service: Service) -> None:
    decision = await route(service, sampled=False)
    resp = await service.client.post(
        "/v1/outcomes", json=outcome(decision["decision_id"], served_model="mystery-model-9")
    )
    result = resp.json()["results"][0]
    assert result["cost_usd"] is None
    assert result["note"] == "unpriced model"
    async with service.sessions() as session:
        row = (await session.exec(select(Outcome))).one()
    assert row.cost_nusd is None
