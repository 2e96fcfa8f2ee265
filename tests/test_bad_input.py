"""Bad input gets a 4xx naming the field and stores nothing; nothing is a 500.

Each case here was found by feeding the running service hostile input (NaN in JSON objects, NUL
characters, counts past 32-bit columns, mixed usage shapes, huge batches, wrong types), which
on PostgreSQL once blocked every later outcome.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import func, select

from router.models import Decision, Outcome, Sample
from router.schemas import MAX_OUTCOMES_PER_REQUEST
from tests.conftest import Service

pytestmark = pytest.mark.asyncio


async def post_raw(service: Service, path: str, body: str) -> Any:
    return await service.client.post(
        path, content=body.encode(), headers={"content-type": "application/json"}
    )


async def stored(service: Service) -> tuple[int, int, int]:
    await service.router.flush()
    async with service.sessions() as session:
        counts = []
        for table in (Decision, Outcome, Sample):
            counts.append(int((await session.exec(select(func.count()).select_from(table))).one()))
    return counts[0], counts[1], counts[2]


async def decision(service: Service, sampled: bool | None = None) -> dict[str, Any]:
    for i in range(500):
        resp = await service.client.post(
            "/v1/route",
            json={"task_type": "classify", "input_tokens": 9, "request_id": f"bad-input-{i:04d}"},
        )
        body: dict[str, Any] = resp.json()
        if sampled is None or body["sampled"] == sampled:
            return body
    raise AssertionError


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"task_type": "classify", "input_tokens": 1, "metadata": {"x": NaN}}', "metadata"),
        ('{"task_type": "classify", "input_tokens": 1, "metadata": {"a": [Infinity]}}', "metadata"),
        (
            '{"task_type": "classify", "input_tokens": 1, "metadata": {"s": "a\\u0000b"}}',
            "metadata",
        ),
        ('{"task_type": "classify", "input_tokens": "12"}', "input_tokens"),
        ('{"task_type": "classify", "input_tokens": true}', "input_tokens"),
        ('{"task_type": "classify", "input_tokens": 1.0}', "input_tokens"),
        ('{"task_type": "classify", "input_tokens": 1, "has_tool_calls": "yes"}', "has_tool_calls"),
        (
            '{"task_type": "classify", "messages": [{"role": "user", "content": 5}]}',
            "messages[0].content",
        ),
        (
            '{"task_type": "classify", "messages": [{"role": "user", "content": [{"text": 3}]}]}',
            "messages[0].content",
        ),
        (
            '{"task_type": "classify", "messages": [{"role": "user", "content": "x", "n": NaN}]}',
            "messages[0]",
        ),
        (
            '{"task_type": "classify", "input_tokens": 1, "metadata": {"big": "'
            + "x" * 20000
            + '"}}',
            "metadata",
        ),
    ],
)
async def test_bad_route_calls_are_422_and_store_nothing(
    service: Service, body: str, field: str
) -> None:
    resp = await post_raw(service, "/v1/route", body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert await stored(service) == (0, 0, 0)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"usage": {"prompt_tokens": 2**40, "completion_tokens": 1}}, "usage.prompt_tokens"),
        ({"usage": {"prompt_tokens": 1e300, "completion_tokens": 1}}, "usage.prompt_tokens"),
        ({"usage": {"prompt_tokens": 10, "completion_tokens": 1, "input_tokens": -99}}, "usage"),
        ({"output_text": "a\u0000b"}, "output_text"),
        ({"served_model": "gpt\u0000"}, "served_model"),
        ({"latency_ms": "12"}, "latency_ms"),
        ({"output_text": "a\ud800b"}, "output_text"),
        ({"usage": {}}, "usage"),
    ],
)
async def test_bad_outcomes_are_422_and_store_nothing(
    service: Service, extra: dict[str, Any], field: str
) -> None:
    d = await decision(service)
    body = {"decision_id": d["decision_id"], "served_model": "gpt-4o-mini", **extra}
    resp = await post_raw(service, "/v1/outcomes", json.dumps(body))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert (await stored(service))[1:] == (0, 0)


async def test_nan_inside_usage_is_422(service: Service) -> None:
    d = await decision(service)
    body = (
        f'{{"decision_id": "{d["decision_id"]}", "served_model": "gpt-4o-mini", '
        '"usage": {"prompt_tokens": 10, "completion_tokens": 1, "zz": NaN}}'
    )
    resp = await post_raw(service, "/v1/outcomes", body)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "usage"


async def test_too_many_outcomes_in_one_request(service: Service) -> None:
    one = {"decision_id": "x", "served_model": "gpt-4o-mini"}
    resp = await service.client.post("/v1/outcomes", json=[one] * (MAX_OUTCOMES_PER_REQUEST + 1))
    assert resp.status_code == 422
    assert "at most 1000" in resp.json()["error"]["message"]


async def test_outcome_without_usage_is_unpriced_not_free(service: Service) -> None:
    d = await decision(service)
    resp = await service.client.post(
        "/v1/outcomes", json={"decision_id": d["decision_id"], "served_model": "gpt-4o-mini"}
    )
    result = resp.json()["results"][0]
    assert (result["cost_usd"], result["note"]) == (None, "no usage reported: unpriced")


async def test_reused_request_id_with_another_request_is_another_decision(
    service: Service,
) -> None:
    first = (
        await service.client.post(
            "/v1/route",
            json={"task_type": "classify", "input_tokens": 9, "request_id": "reused-id-0001"},
        )
    ).json()
    retry = (
        await service.client.post(
            "/v1/route",
            json={"task_type": "classify", "input_tokens": 9, "request_id": "reused-id-0001"},
        )
    ).json()
    other = (
        await service.client.post(
            "/v1/route",
            json={
                "task_type": "code_generation",
                "input_tokens": 9,
                "request_id": "reused-id-0001",
            },
        )
    ).json()
    assert retry["decision_id"] == first["decision_id"]
    assert retry["sampled"] == first["sampled"]
    assert other["decision_id"] != first["decision_id"]
    await service.router.flush()
    async with service.sessions() as session:
        row = await session.get(Decision, other["decision_id"])
    assert row is not None and row.task_class == "code_generation"


async def test_text_sent_after_a_textless_report_is_still_graded(service: Service) -> None:
    d = await decision(service, sampled=True)
    bare = {
        "decision_id": d["decision_id"],
        "served_model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    first = (await service.client.post("/v1/outcomes", json=bare)).json()["results"][0]
    assert first["sample_queued"] is False and "send them again" in first["note"]
    full = {**bare, "input_messages": [{"role": "user", "content": "hi"}], "output_text": "spam"}
    again = (await service.client.post("/v1/outcomes", json=full)).json()
    assert (again["stored"], again["results"][0]["sample_queued"]) == (0, True)
    assert (await stored(service))[1:] == (1, 1)
    third = (await service.client.post("/v1/outcomes", json=full)).json()["results"][0]
    assert third["sample_queued"] is False
    assert (await stored(service))[1:] == (1, 1)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nowhere", 404),
        ("DELETE", "/v1/route", 405),
    ],
)
async def test_unknown_paths_use_the_error_shape(
    service: Service, method: str, path: str, status: int
) -> None:
    resp = await service.client.request(method, path)
    assert resp.status_code == status
    assert resp.json()["error"]["code"] in ("not_found", "method_not_allowed")
