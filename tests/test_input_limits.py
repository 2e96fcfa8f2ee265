"""Limits on every input: the request-body limit (413, Content-Length or chunked), and nesting
depth, list lengths and string sizes on the decision API and the gateway, each tried just under
and just over, with the error naming the field; ``Authorization`` only as ``Bearer``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from router.db import make_engine, session_factory
from router.keys import create_key
from router.schemas import (
    MAX_CONTENT_PARTS,
    MAX_JSON_DEPTH,
    MAX_JSON_ITEMS,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    MAX_TOOLS,
)
from tests.conftest import Service, make_settings, running_service
from tests.serving import served
from tests.wire import OPENAI_PATH, Reply, WireServer, openai_chat
from tierwise.app import create_app
from tierwise.limits import DEFAULT_MAX_REQUEST_BYTES
from tierwise.settings import Settings

LIMIT = 64 * 1024


def nest(levels: int) -> dict[str, Any]:
    """A JSON object ``levels`` objects deep: ``nest(2) == {"k": {"k": 0}}``."""
    value: Any = 0
    for _ in range(levels):
        value = {"k": value}
    return value  # type: ignore[no-any-return]


def route_body(size: int) -> bytes:
    """A valid route request of exactly ``size`` bytes (padded in its message)."""
    base: dict[str, Any] = {"task_type": "classify", "messages": [{"role": "user", "content": ""}]}
    pad = size - len(json.dumps(base, separators=(",", ":")))
    base["messages"][0]["content"] = "x" * pad
    body = json.dumps(base, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def assert_too_large(resp: httpx.Response, limit: int) -> None:
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["field"], error["type"]) == (
        "request_too_large",
        "body",
        "invalid_request_error",
    )
    assert f"limit of {limit} bytes" in error["message"]


# ---- the body limit ---------------------------------------------------------------------------


def test_the_default_limit_is_a_few_megabytes() -> None:
    assert Settings().max_request_bytes == DEFAULT_MAX_REQUEST_BYTES == 8 * 1024 * 1024


async def test_a_body_over_the_limit_is_413_by_content_length(database_url: str) -> None:
    async with running_service(database_url, max_request_bytes=LIMIT) as svc:
        headers = {"content-type": "application/json"}
        ok = await svc.client.post("/v1/route", content=route_body(LIMIT), headers=headers)
        assert ok.status_code == 200, ok.text
        over = await svc.client.post("/v1/route", content=route_body(LIMIT + 1), headers=headers)
        assert_too_large(over, LIMIT)
        for path in ("/v1/outcomes", "/v1/chat/completions", "/v1/classes/x/pin"):
            resp = await svc.client.post(path, content=b" " * (LIMIT + 1), headers=headers)
            assert_too_large(resp, LIMIT)


async def test_a_chunked_body_is_counted_as_it_arrives(database_url: str) -> None:
    """No Content-Length (chunked transfer encoding): refused at the first byte past the limit,
    over ASGI and over a real socket."""

    def chunks(total: int) -> Any:
        async def gen() -> AsyncIterator[bytes]:
            body = route_body(total)
            for i in range(0, total, 4096):
                yield body[i : i + 4096]

        return gen()

    limit = 20_000
    async with running_service(database_url, max_request_bytes=limit) as svc:
        headers = {"content-type": "application/json"}
        ok = await svc.client.post("/v1/route", content=chunks(limit), headers=headers)
        assert ok.status_code == 200, ok.text
        over = await svc.client.post("/v1/route", content=chunks(limit + 1), headers=headers)
        assert_too_large(over, limit)
        gateway = await svc.client.post(
            "/v1/chat/completions", content=chunks(limit + 1), headers=headers
        )
        assert_too_large(gateway, limit)
        # Over a socket: an app of its own (one process holds a spool folder at a time).
        app = create_app(make_settings(database_url, max_request_bytes=limit))
        async with served(app) as url, httpx.AsyncClient(base_url=url) as client:
            req = client.build_request(
                "POST", "/v1/route", content=chunks(limit + 1), headers=headers
            )
            assert "content-length" not in req.headers
            assert req.headers["transfer-encoding"] == "chunked"
            assert_too_large(await client.send(req), limit)
            req = client.build_request("POST", "/v1/route", content=chunks(limit), headers=headers)
            assert (await client.send(req)).status_code == 200


async def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWISE_MAX_REQUEST_BYTES", "2048")
    assert Settings().max_request_bytes == 2048
    monkeypatch.setenv("TIERWISE_MAX_REQUEST_BYTES", "10")
    with pytest.raises(ValueError, match="max_request_bytes"):
        Settings()


# ---- bounds on the decision API ---------------------------------------------------------------


def field_of(resp: httpx.Response) -> str:
    assert resp.status_code == 422, resp.text
    field: str = resp.json()["error"]["field"]
    return field


@pytest.mark.parametrize(
    ("make", "bound", "field"),
    [
        (lambda n: {"messages": [{"role": "user", "content": "hi"}] * n}, MAX_MESSAGES, "messages"),
        (
            lambda n: {"messages": [{"role": "user", "content": "x" * n}]},
            MAX_TEXT_CHARS,
            "messages[0].content",
        ),
        (
            lambda n: {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * n}]
            },
            MAX_CONTENT_PARTS,
            "messages[0].content",
        ),
        (lambda n: {"input_tokens": 1, "metadata": nest(n)}, MAX_JSON_DEPTH, "metadata"),
        # A message's other fields sit in the message (depth 1) itself.
        (
            lambda n: {"messages": [{"role": "user", "content": "a", "extra": nest(n)}]},
            MAX_JSON_DEPTH - 1,
            "messages[0]",
        ),
        (lambda n: {"input_tokens": 1, "task_type": "t" * n}, 200, "task_type"),
        (lambda n: {"input_tokens": 1, "item_id": "i" * n}, 200, "item_id"),
    ],
    ids=[
        "messages",
        "content-chars",
        "content-parts",
        "metadata-depth",
        "extra-depth",
        "task-type",
        "item-id",
    ],
)
async def test_route_bounds_just_under_and_just_over(
    service: Service, make: Any, bound: int, field: str
) -> None:
    base = {"task_type": "t"}
    under = await service.client.post("/v1/route", json={**base, **make(bound)})
    assert under.status_code == 200, under.text[:500]
    over = await service.client.post("/v1/route", json={**base, **make(bound + 1)})
    assert field_of(over) == field, over.text[:500]


async def test_free_json_lists_are_bounded(service: Service) -> None:
    def body(n: int) -> dict[str, Any]:
        return {"task_type": "t", "messages": [{"role": "user", "content": "a", "x": [0] * n}]}

    assert (await service.client.post("/v1/route", json=body(MAX_JSON_ITEMS))).status_code == 200
    over = await service.client.post("/v1/route", json=body(MAX_JSON_ITEMS + 1))
    assert field_of(over) == "messages[0]"
    assert "x: at most 10000 items" in over.json()["error"]["message"]


async def test_outcome_bounds_just_under_and_just_over(service: Service) -> None:
    route = await service.client.post(
        "/v1/route", json={"task_type": "classify", "input_tokens": 1}
    )
    decision_id = route.json()["decision_id"]

    def outcome(**extra: Any) -> dict[str, Any]:
        return {"decision_id": decision_id, "served_model": "gpt-4o-mini", **extra}

    msgs = [{"role": "user", "content": "a"}]
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        (
            outcome(input_messages=msgs * MAX_MESSAGES),
            outcome(input_messages=msgs * (MAX_MESSAGES + 1)),
            "input_messages",
        ),
        (
            outcome(output_text="x" * MAX_TEXT_CHARS),
            outcome(output_text="x" * (MAX_TEXT_CHARS + 1)),
            "output_text",
        ),
        (
            outcome(usage={"prompt_tokens": 1, "x": nest(MAX_JSON_DEPTH - 1)}),
            outcome(usage={"prompt_tokens": 1, "x": nest(MAX_JSON_DEPTH)}),
            "usage",
        ),
        (outcome(decision_id="d" * 64), outcome(decision_id="d" * 65), "decision_id"),
    ]
    for under, over, field in cases:
        resp = await service.client.post("/v1/outcomes", json=over)
        assert field_of(resp) == field, resp.text[:300]
        resp = await service.client.post("/v1/outcomes", json=under)
        assert resp.status_code in (200, 404), resp.text[:300]  # 404: the long unknown id
        if field == "decision_id":
            assert resp.json()["error"]["field"] == "decision_id"


async def test_operator_strings_are_bounded(service: Service) -> None:
    ok = await service.client.post("/v1/classes/classify/pin", json={"reason": "r" * 2000})
    assert ok.status_code == 200, ok.text
    over = await service.client.post("/v1/classes/classify/unpin", json={"reason": "r" * 2001})
    assert field_of(over) == "reason"
    nul = await service.client.post("/v1/classes/classify/unpin", json={"reason": "a\x00b"})
    assert field_of(nul) == "reason"
    path = await service.client.get("/v1/classes/" + "c" * 201 + "/quality")
    assert field_of(path) == "task_class"
    control = await service.client.get("/v1/classes/a%00b/quality")
    assert field_of(control) == "task_class"


# ---- bounds on the gateway --------------------------------------------------------------------


@asynccontextmanager
async def gateway(database_url: str) -> AsyncIterator[tuple[Service, WireServer]]:
    with WireServer() as wire:
        async with running_service(
            database_url, openai_base_url=wire.openai_base_url, gateway_upstream="openai"
        ) as svc:
            yield svc, wire


HI = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("make", "bound", "field"),
    [
        (lambda n: {"messages": HI * n}, MAX_MESSAGES, "messages"),
        (
            lambda n: {"messages": [{"role": "user", "content": "x" * n}]},
            MAX_TEXT_CHARS,
            "messages[0].content",
        ),
        (lambda n: {"messages": HI, "tools": [TOOL] * n}, MAX_TOOLS, "tools"),
        # The passthrough: a field tierwise does not read, inside the body (depth 1).
        (
            lambda n: {"messages": HI, "metadata": nest(n)},
            MAX_JSON_DEPTH - 1,
            "metadata" + ".k" * 31,
        ),
        (lambda n: {"messages": HI, "user": "u" * n}, MAX_TEXT_CHARS, "user"),
        (lambda n: {"messages": HI, "stop": ["s"] * n}, MAX_JSON_ITEMS, "stop"),
    ],
    ids=[
        "messages",
        "content-chars",
        "tools",
        "passthrough-depth",
        "passthrough-string",
        "passthrough-list",
    ],
)
async def test_gateway_bounds_just_under_and_just_over(
    database_url: str, make: Any, bound: int, field: str
) -> None:
    async with gateway(database_url) as (svc, wire):
        wire.enqueue(OPENAI_PATH, Reply(body=openai_chat("ok")))
        body = {"model": "tierwise/classify", **make(bound)}
        under = await svc.client.post("/v1/chat/completions", json=body)
        assert under.status_code == 200, under.text[:500]
        over = await svc.client.post(
            "/v1/chat/completions", json={"model": "tierwise/classify", **make(bound + 1)}
        )
        assert over.status_code == 400, over.text[:500]
        error = over.json()["error"]
        assert error["param"] == field, error
        assert len(wire.hits(OPENAI_PATH)) == 1  # the refused call never went upstream


async def test_gateway_refuses_nan(database_url: str) -> None:
    async with gateway(database_url) as (svc, wire):
        resp = await svc.client.post(
            "/v1/chat/completions",
            content=b'{"model": "tierwise/classify", "messages": [], "temperature": NaN}',
            headers={"content-type": "application/json"},
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "body"
    assert wire.hits(OPENAI_PATH) == []


# ---- Authorization: Bearer only ---------------------------------------------------------------


async def test_a_bare_key_is_401_saying_to_use_bearer(database_url: str) -> None:
    engine = make_engine(database_url)
    async with session_factory(engine)() as session:
        made = await create_key(session, "app", ["route", "read-samples"])
        await session.commit()
    await engine.dispose()
    async with running_service(database_url) as svc:
        route = {"task_type": "classify", "input_tokens": 1}
        ok = await svc.client.post(
            "/v1/route", json=route, headers={"authorization": f"Bearer {made.key}"}
        )
        assert ok.status_code == 200, ok.text
        by_header = await svc.client.post("/v1/route", json=route, headers={"x-api-key": made.key})
        assert by_header.status_code == 200
        for value in (made.key, f"Token {made.key}", "Bearer", "Bearer "):
            resp = await svc.client.post("/v1/route", json=route, headers={"authorization": value})
            assert resp.status_code == 401, (value, resp.text)
            error = resp.json()["error"]
            assert (error["code"], error["field"]) == ("unauthorized", "authorization")
            assert "'Bearer <token>'" in error["message"], value
        # A bare key beside a good x-api-key is still refused: the header says Bearer or nothing.
        mixed = await svc.client.post(
            "/v1/route", json=route, headers={"authorization": made.key, "x-api-key": made.key}
        )
        assert mixed.status_code == 401


async def test_no_key_ever_created_ignores_the_header(database_url: str) -> None:
    async with running_service(database_url) as svc:
        resp = await svc.client.post(
            "/v1/route",
            json={"task_type": "classify", "input_tokens": 1},
            headers={"authorization": "not-bearer"},
        )
    assert resp.status_code == 200, resp.text
