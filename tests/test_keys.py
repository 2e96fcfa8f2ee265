"""Callers' API keys (router.keys): open mode, keys required once one exists, scopes, revocation
within the poll bound, only the hash stored, the caller recorded on the decision, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from router.errors import Conflict, InvalidInput, NotFound
from router.keys import SCOPES, NewKey, create_key, key_id, list_keys, require, revoke_key
from router.models import ApiKey, Decision
from tests.conftest import TABLES, Service, running_service

pytestmark = pytest.mark.asyncio

ROUTE = {"task_type": "classify", "input_tokens": 12}
PIN = {"reason": "incident"}

# (method, path, body, the scope it needs)
ENDPOINTS: list[tuple[str, str, object, str]] = [
    ("POST", "/v1/route", ROUTE, "route"),
    ("POST", "/v1/outcomes", [], "outcomes"),  # 422 past the key check: no outcome given
    ("GET", "/v1/routing-table", None, "read-samples"),
    ("GET", "/v1/classes/classify/quality", None, "read-samples"),
    ("GET", "/v1/escalations", None, "read-samples"),
    ("GET", "/v1/costs", None, "read-samples"),
    ("POST", "/v1/classes/classify/pin", PIN, "admin"),
    ("POST", "/v1/classes/classify/unpin", PIN, "admin"),
    ("POST", "/v1/classes/classify/override", {**PIN, "model": "gpt-4o"}, "admin"),
]


async def new_key(
    sessions: async_sessionmaker[AsyncSession], name: str, scopes: list[str] | tuple[str, ...]
) -> NewKey:
    async with sessions() as session:
        made = await create_key(session, name, scopes)
        await session.commit()
    return made


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def call(
    svc: Service, method: str, path: str, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    kwargs: dict[str, object] = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    return await svc.client.request(method, path, **kwargs)  # type: ignore[arg-type]


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Poll ``check`` every 20 ms until it is true; the seconds it took. Fails at ``timeout_s``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["field"]) == (code, "authorization")
    assert error["message"]


# ---- the key itself ---------------------------------------------------------------------------


async def test_a_key_has_its_id_and_a_long_secret(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    made = await new_key(sessions, "ci", ["route"])
    match = re.fullmatch(r"tw-([0-9a-f]{8})-([A-Za-z0-9_\-]{43})", made.key)
    assert match is not None, made.key
    assert match[1] == made.info.id == key_id(made.key)
    assert made.info.scopes == ("route",)
    assert key_id("tw-xyz-abc") is None and key_id("sk-ant-123") is None


async def test_require_refuses_an_unknown_scope_when_declared() -> None:
    with pytest.raises(ValueError, match="read-samples"):
        require("read")


# ---- open mode --------------------------------------------------------------------------------


async def test_with_no_key_every_endpoint_is_open_and_start_up_says_so(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tierwise.app")
    async with running_service(database_url) as svc:
        for method, path, body, _scope in ENDPOINTS:
            resp = await call(svc, method, path, body, bearer("tw-00000000-not-a-key-at-all-x"))
            assert resp.status_code not in (401, 403), (path, resp.text)
        routed = await svc.client.post("/v1/route", json={**ROUTE, "request_id": "open-mode-1"})
        await svc.router.flush()
        async with svc.sessions() as session:
            decision = await session.get(Decision, routed.json()["decision_id"])
    assert decision is not None and decision.caller is None
    lines = [r.getMessage() for r in caplog.records if "API key" in r.getMessage()]
    assert lines == [
        "no API keys: every endpoint is open; create one with `tierwise keys create`"
    ], caplog.text


# ---- keys required ----------------------------------------------------------------------------


async def test_once_a_key_exists_every_endpoint_needs_one(
    database_url: str, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    made = await new_key(sessions, "everything", SCOPES)
    caplog.set_level(logging.INFO, logger="tierwise.app")
    async with running_service(database_url) as svc:
        for method, path, body, _scope in ENDPOINTS:
            assert_error(await call(svc, method, path, body), 401, "unauthorized")
            wrong = made.key[:-1] + ("B" if made.key.endswith("A") else "A")
            assert_error(await call(svc, method, path, body, bearer(wrong)), 401, "unauthorized")
            assert_error(
                await call(svc, method, path, body, bearer("tw-nothex!-x")), 401, "unauthorized"
            )
        for headers in (bearer(made.key), {"x-api-key": made.key}):
            resp = await svc.client.post("/v1/route", json=ROUTE, headers=headers)
            assert resp.status_code == 200, resp.text
            resp = await svc.client.get("/v1/routing-table", headers=headers)
            assert resp.status_code == 200, resp.text
        for path in ("/healthz", "/openapi.json", "/docs"):
            assert (await svc.client.get(path)).status_code == 200, path
    assert "1 API keys (0 revoked): every endpoint but /healthz needs one" in caplog.text
    assert "no API keys" not in caplog.text


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS)
async def test_each_endpoint_needs_its_own_scope(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    method: str,
    path: str,
    body: object,
    scope: str,
) -> None:
    others = await new_key(sessions, "others", [s for s in SCOPES if s != scope])
    only = await new_key(sessions, "only", [scope])
    async with running_service(database_url) as svc:
        resp = await call(svc, method, path, body, bearer(others.key))
        assert_error(resp, 403, "forbidden")
        assert scope in resp.json()["error"]["message"]
        resp = await call(svc, method, path, body, {"x-api-key": only.key})
        assert resp.status_code not in (401, 403), resp.text


async def test_the_admin_token_and_an_admin_key_both_pass_operator_calls(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admin = await new_key(sessions, "ops", ["admin"])
    caller = await new_key(sessions, "app", ["route", "read-samples"])
    async with running_service(database_url, admin_token=SecretStr("tok")) as svc:
        pin, unpin = "/v1/classes/classify/pin", "/v1/classes/classify/unpin"
        assert (await svc.client.post(pin, json=PIN, headers=bearer("tok"))).status_code == 200
        resp = await svc.client.post(unpin, json=PIN, headers=bearer(admin.key))
        assert resp.status_code == 200, resp.text
        assert_error(
            await svc.client.post(pin, json=PIN, headers=bearer(caller.key)), 403, "forbidden"
        )
        assert_error(await svc.client.post(pin, json=PIN), 401, "unauthorized")
        # the admin token is for operator calls only, not a caller's key
        assert_error(
            await svc.client.get("/v1/escalations", headers=bearer("tok")), 401, "unauthorized"
        )
        events = await svc.client.get("/v1/escalations", headers=bearer(caller.key))
        assert [e["actor"] for e in events.json()] == ["operator", "operator"]


# ---- changes seen within the poll bound -------------------------------------------------------


async def test_a_revoked_key_stops_and_a_new_one_starts_within_the_poll_interval(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Keys changed by another session (as by the CLI, another process) are seen within
    ``snapshot_poll_s`` plus a query; here the poll is 0.5 s and the bound 1.5 s."""
    poll_s = 0.5
    first = await new_key(sessions, "first", ["route"])
    async with running_service(database_url, snapshot_poll_s=poll_s) as svc:

        async def status(key: str) -> int:
            resp = await svc.client.post("/v1/route", json=ROUTE, headers=bearer(key))
            return resp.status_code

        assert await status(first.key) == 200
        async with sessions() as session:
            await revoke_key(session, "first")
            await session.commit()

        async def refused() -> bool:
            return await status(first.key) == 401

        assert await until(refused, timeout_s=10) <= poll_s + 1.0
        resp = await svc.client.post("/v1/route", json=ROUTE, headers=bearer(first.key))
        assert resp.json()["error"]["message"] == f"API key {first.info.id} is revoked"
        # revoking the last key does not open the service
        assert_error(await svc.client.post("/v1/route", json=ROUTE), 401, "unauthorized")

        second = await new_key(sessions, "second", ["route"])

        async def accepted() -> bool:
            return await status(second.key) == 200

        assert await until(accepted, timeout_s=10) <= poll_s + 1.0


async def test_start_up_with_every_key_revoked_says_callers_are_refused(
    database_url: str, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    await new_key(sessions, "gone", ["route"])
    async with sessions() as session:
        await revoke_key(session, "gone")
        await session.commit()
    caplog.set_level(logging.INFO, logger="tierwise.app")
    async with running_service(database_url) as svc:
        assert_error(await svc.client.post("/v1/route", json=ROUTE), 401, "unauthorized")
        assert (await svc.client.get("/healthz")).status_code == 200
    assert "every API key (1) is revoked" in caplog.text


# ---- what is stored ---------------------------------------------------------------------------


async def test_the_decision_records_the_callers_key(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    made = await new_key(sessions, "billing-team", ["route"])
    async with running_service(database_url) as svc:
        resp = await svc.client.post(
            "/v1/route", json={**ROUTE, "request_id": "with-key-1"}, headers=bearer(made.key)
        )
        assert resp.status_code == 200, resp.text
        await svc.router.flush()
        async with svc.sessions() as session:
            decision = await session.get(Decision, resp.json()["decision_id"])
    assert decision is not None and decision.caller == made.info.id


async def test_only_the_hash_is_stored(
    database_url: str, backend: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    made = await new_key(sessions, "ci", ["route", "outcomes"])
    secret = made.key.removeprefix(f"tw-{made.info.id}-")
    assert len(secret) == 43
    async with running_service(database_url) as svc:
        resp = await svc.client.post("/v1/route", json=ROUTE, headers=bearer(made.key))
        assert resp.status_code == 200
        await svc.router.flush()
    async with sessions() as session:
        row = await session.get(ApiKey, made.info.id)
        assert row is not None
        assert row.secret_hash == hashlib.sha256(made.key.encode()).hexdigest()
        dumped = ""
        conn = await session.connection()
        for table in TABLES:
            rows = (await conn.execute(sa.text(f"SELECT * FROM {table}"))).all()
            dumped += repr(rows)
    pieces = [secret[i : i + 12] for i in range(0, len(secret) - 11, 4)]  # every 12 characters
    for piece in pieces:
        assert piece not in dumped
    if backend == "sqlite":
        path = Path(database_url.removeprefix("sqlite+aiosqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        for piece in pieces:
            assert piece.encode() not in raw


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scopes", "field", "message"),
    [
        ("ci", ["route", "write"], "scopes", "unknown scope 'write'"),
        ("ci", ["Route"], "scopes", "unknown scope 'Route'"),
        ("ci", [], "scopes", "give at least one of route, outcomes, read-samples, admin"),
        ("", ["route"], "name", "give the key a name"),
        ("   ", ["route"], "name", "give the key a name"),
        ("x" * 201, ["route"], "name", "at most 200 characters"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    scopes: list[str],
    field: str,
    message: str,
) -> None:
    async with sessions() as session:
        with pytest.raises(InvalidInput) as caught:
            await create_key(session, name, scopes)
        await session.commit()
    assert caught.value.field == field
    assert message in caught.value.message
    async with sessions() as session:
        assert await list_keys(session) == []


async def test_a_duplicate_name_is_refused_and_the_first_key_kept(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    first = await new_key(sessions, "ci", ["route"])
    async with sessions() as session:
        with pytest.raises(Conflict) as caught:
            await create_key(session, " ci ", ["admin"])
        await session.commit()
    assert caught.value.field == "name" and "'ci' exists already" in caught.value.message
    async with sessions() as session:
        assert [k.id for k in await list_keys(session)] == [first.info.id]


async def test_revoke_names_what_it_cannot_do(sessions: async_sessionmaker[AsyncSession]) -> None:
    made = await new_key(sessions, "ci", ["route"])
    async with sessions() as session:
        with pytest.raises(NotFound) as missing:
            await revoke_key(session, "nobody")
        by_id = await revoke_key(session, made.info.id)
        await session.commit()
    assert missing.value.field == "key"
    assert by_id.revoked_at is not None and not by_id.live
    async with sessions() as session:
        with pytest.raises(Conflict) as again:
            await revoke_key(session, "ci")
        (kept,) = await list_keys(session)
    assert again.value.field == "key" and "was revoked at" in again.value.message
    assert kept.revoked_at == by_id.revoked_at and kept.scopes == ("route",)
