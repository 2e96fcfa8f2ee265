"""``tierwise keys``: a key made by the CLI in another process works in a running service within
the poll bound, and stops once the CLI revokes it; the key is printed once and the list never
shows it; bad input is one line naming the field, and nothing is stored. (Each command is a
process that takes seconds to start, so these are few; test_keys.py covers the cases.)"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from router.db import make_engine, session_factory
from router.keys import SCOPES, list_keys
from tests.conftest import ROOT, running_service

pytestmark = pytest.mark.asyncio

ROUTE = {"task_type": "classify", "input_tokens": 12}


async def tierwise(*args: str) -> tuple[int, str]:
    """Run ``python -m tierwise.cli ARGS`` in a subprocess without blocking the event loop (the
    service under test keeps polling meanwhile); its exit code and stdout + stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tierwise.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_key_made_by_the_cli_works_in_a_running_service(database_url: str) -> None:
    poll_s = 0.5
    async with running_service(database_url, snapshot_poll_s=poll_s) as svc:
        assert (await svc.client.post("/v1/route", json=ROUTE)).status_code == 200  # open

        code, out = await tierwise(
            "keys", "create", "--name", "ci", "--scopes", "route,read-samples", "--json",
            "--database-url", database_url,
        )  # fmt: skip
        assert code == 0, out
        made = json.loads(out)
        assert made["scopes"] == ["route", "read-samples"] and made["revoked_at"] is None
        key = made["key"]

        async def status(headers: dict[str, str]) -> int:
            return (await svc.client.post("/v1/route", json=ROUTE, headers=headers)).status_code

        async def closed() -> bool:
            return await status({}) == 401

        # the CLI committed before it printed: from here the bound holds
        assert await until(closed, timeout_s=10) <= poll_s + 1.0
        assert await status({"authorization": f"Bearer {key}"}) == 200
        assert await status({"x-api-key": key}) == 200

        code, out = await tierwise("keys", "revoke", "ci", "--database-url", database_url)
        assert code == 0 and f"revoked API key {made['id']} (ci)" in out, out

        async def refused() -> bool:
            return await status({"authorization": f"Bearer {key}"}) == 401

        assert await until(refused, timeout_s=10) <= poll_s + 1.0


async def test_create_prints_the_key_once_list_never_shows_it_and_a_name_is_unique(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    code, out = await tierwise(
        "keys", "create", "--name", "ops team", "--scopes", ",".join(SCOPES), "--database-url", url
    )
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("created API key ") and "(ops team)" in lines[0]
    assert "scopes: route, outcomes, read-samples, admin" in lines[0]
    key = lines[1]
    assert key.startswith("tw-") and len(key) == 55
    assert "will not be shown again" in lines[2]

    (code, out), (dup_code, dup_out) = await asyncio.gather(
        tierwise("keys", "list", "--database-url", url),
        tierwise(
            "keys", "create", "--name", "ops team", "--scopes", "route", "--database-url", url
        ),
    )
    assert code == 0, out
    assert "ops team" in out and key.split("-")[1] in out
    assert key not in out and key[12:30] not in out
    assert dup_code == 2, dup_out
    assert dup_out.strip() == "error (conflict): name: a key named 'ops team' exists already"


async def test_bad_input_is_one_line_naming_the_field_and_stores_nothing(tmp_path: Path) -> None:
    """One case through the CLI (the rest are in test_keys.py): the one-line exit, no row."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    code, out = await tierwise(
        "keys", "create", "--name", "ci", "--scopes", "route,write", "--database-url", url
    )
    assert code == 2, out
    assert out.strip() == (
        "error (invalid_input): scopes: unknown scope 'write'; the scopes are route, outcomes, "
        "read-samples, admin"
    )
    engine = make_engine(url)
    try:
        async with session_factory(engine)() as session:
            assert await list_keys(session) == []
    finally:
        await engine.dispose()


async def test_list_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    code, out = await tierwise(
        "keys", "list", "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db"
    )
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
    assert "has no tierwise schema" in out and "tierwise db upgrade" in out
