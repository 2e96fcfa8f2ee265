"""Operator endpoints (pin, unpin, override) need the admin token when one is configured."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.conftest import running_service

pytestmark = pytest.mark.asyncio

TOKEN = "s3cret-admin-token"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": TOKEN}, 401),
        ({"authorization": f"Basic {TOKEN}"}, 401),
        ({"authorization": f"Bearer {TOKEN}"}, 200),
        ({"authorization": f"bearer {TOKEN}"}, 200),
    ],
)
async def test_pin_needs_the_admin_token(
    database_url: str, headers: dict[str, str], status: int
) -> None:
    async with running_service(database_url, admin_token=SecretStr(TOKEN)) as svc:
        resp = await svc.client.post(
            "/v1/classes/classify/pin", json={"reason": "incident"}, headers=headers
        )
        assert resp.status_code == status, resp.text
        if status == 401:
            error = resp.json()["error"]
            assert (error["code"], error["field"]) == ("unauthorized", "authorization")
            if "authorization" in headers and not headers["authorization"].startswith("Bearer"):
                assert "'Bearer <token>'" in error["message"]
            assert (await svc.client.get("/v1/escalations")).json() == []


async def test_reads_need_no_token(database_url: str) -> None:
    async with running_service(database_url, admin_token=SecretStr(TOKEN)) as svc:
        assert (await svc.client.get("/v1/escalations")).status_code == 200
        resp = await svc.client.post("/v1/route", json={"task_type": "classify", "input_tokens": 1})
        assert resp.status_code == 200
