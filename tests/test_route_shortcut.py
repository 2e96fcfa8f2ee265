"""POST /v1/route's shortcut (router.api.RouteShortcut) answers exactly what the documented
FastAPI endpoint answers: the same request, sent with the shortcut in the app's routes and
without it, gets the same status, headers that matter and body, for valid and invalid input,
open and keyed, and a body that arrives in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlmodel import col, select

from router.api import RouteShortcut
from router.keys import create_key
from router.models import Decision
from tests.conftest import Service

pytestmark = pytest.mark.asyncio

REQUEST_ID = "shortcut-0001"

BODIES: list[tuple[str, bytes, str | None]] = [
    # (what, body, content type)
    ("tokens", b'{"task_type":"classify","input_tokens":120,"request_id":"r-000001"}', None),
    (
        "messages",
        orjson.dumps(
            {
                "task_type": "summarize",
                "messages": [{"role": "user", "content": "a long text " * 50}],
                "has_tool_calls": True,
                "metadata": {"team": "support", "n": [1, 2]},
                "request_id": "r-000002",
                "item_id": "item-7",
            }
        ),
        None,
    ),
    ("unknown task type", b'{"task_type":"poetry","input_tokens":5,"request_id":"r-03"}', None),
    (
        "charset parameter",
        b'{"task_type":"classify","input_tokens":1}',
        "application/json; charset=utf-8",
    ),
    ("no tokens", b'{"task_type":"classify"}', None),
    ("wrong type", b'{"task_type":"classify","input_tokens":"12"}', None),
    ("negative", b'{"task_type":"classify","input_tokens":-1}', None),
    ("extra field", b'{"task_type":"classify","input_tokens":1,"model":"x"}', None),
    ("bad task type", b'{"task_type":"no spaces","input_tokens":1}', None),
    ("not json", b"task_type=classify", None),
    ("empty body", b"", None),
    ("a list", b"[1,2]", None),
    ("nan", b'{"task_type":"classify","input_tokens":NaN}', None),
    (
        "text/plain",
        b'{"task_type":"classify","input_tokens":1,"request_id":"r-0004"}',
        "text/plain",
    ),
    ("no content type", b'{"task_type":"classify","input_tokens":1,"request_id":"r-05"}', ""),
]


def _comparable(resp: httpx.Response) -> tuple[int, str | None, str | None, Any]:
    body = resp.json() if resp.content else None
    if isinstance(body, dict) and "decision_id" not in body and "request_id" in body:
        body.pop("request_id")
    return resp.status_code, resp.headers.get("content-type"), resp.headers.get("allow"), body


async def _both(service: Service, send: Any) -> tuple[Any, Any]:
    """``send()``'s response with the shortcut, then without it (the documented endpoint)."""
    routes = service.app.router.routes
    assert isinstance(routes[0], RouteShortcut)
    short = await send()
    shortcut = routes.pop(0)
    try:
        full = await send()
    finally:
        routes.insert(0, shortcut)
    return _comparable(short), _comparable(full)


def _random_ids(body: bytes) -> bool:
    return b"request_id" not in body


@pytest.mark.parametrize(("what", "body", "content_type"), BODIES, ids=[b[0] for b in BODIES])
async def test_shortcut_answers_as_the_endpoint(
    service: Service, what: str, body: bytes, content_type: str | None
) -> None:
    headers = {"content-type": content_type if content_type is not None else "application/json"}
    if content_type == "":
        headers = {}

    async def send() -> httpx.Response:
        return await service.client.post("/v1/route", content=body, headers=headers)

    short, full = await _both(service, send)
    if short[0] == 200 and _random_ids(body):
        # A decision without a request_id has a random id: compare everything else.
        assert short[3].pop("decision_id") != full[3].pop("decision_id")
    assert short == full


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_the_endpoints_405(service: Service, method: str) -> None:
    async def send() -> httpx.Response:
        return await service.client.request(method, "/v1/route")

    short, full = await _both(service, send)
    assert short[0] == 405
    assert short == full


async def test_keys_are_checked_the_same_way(service: Service) -> None:
    async with service.sessions() as session:
        routing = (await create_key(session, "route-only", ["route"])).key
        reader = (await create_key(session, "reader", ["read-samples"])).key
        await session.commit()
    await service.app.state.keys.refresh()
    body = b'{"task_type":"classify","input_tokens":3,"request_id":"keyed-01"}'
    for headers, status in [
        ({}, 401),
        ({"authorization": "Bearer tw_nope"}, 401),
        ({"authorization": routing}, 401),  # Bearer only
        ({"authorization": f"Bearer {reader}"}, 403),
        ({"authorization": f"Bearer {routing}"}, 200),
        ({"x-api-key": routing}, 200),
    ]:

        async def send(h: dict[str, str] = headers) -> httpx.Response:
            return await service.client.post(
                "/v1/route", content=body, headers={"content-type": "application/json", **h}
            )

        short, full = await _both(service, send)
        assert short[0] == status, headers
        assert short == full, headers


async def test_a_body_in_chunks_is_read_whole(service: Service) -> None:
    body = orjson.dumps(
        {
            "task_type": "summarize",
            "messages": [{"role": "user", "content": "word " * 4000}],
            "request_id": "chunked-01",
        }
    )

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 700):
            yield body[i : i + 700]

    async def send() -> httpx.Response:
        return await service.client.post(
            "/v1/route", content=chunks(), headers={"content-type": "application/json"}
        )

    short, full = await _both(service, send)
    assert short[0] == 200
    assert short[3]["input_tokens"] >= 2000
    assert short[3]["task_class"] == "summarize:large_or_tools"
    assert short == full


async def test_every_decision_answered_by_the_shortcut_is_stored(service: Service) -> None:
    ids = []
    for i in range(25):
        resp = await service.client.post(
            "/v1/route", json={"task_type": "classify", "input_tokens": i}
        )
        assert resp.status_code == 200
        ids.append(resp.json()["decision_id"])
    await service.router.flush()
    async with service.sessions() as session:
        stored = (await session.exec(select(Decision.id).where(col(Decision.id).in_(ids)))).all()
    assert sorted(stored) == sorted(ids)
