"""A database outage loses nothing that was acknowledged.

On PostgreSQL, against a database this test creates and makes unreachable itself (``ALLOW_
CONNECTIONS false`` and its sessions terminated; the shared server is never stopped): a real
``tierwise serve`` keeps routing from its snapshot, spools what it acknowledges, answers 503
with ``Retry-After`` where it cannot keep a request, says it is not ready, and logs the outage
once; killed with SIGKILL during the outage and started again once the database is back, it
writes every acknowledged decision and outcome exactly once.

On SQLite (in-process, over ASGI): connections that can no longer write (``PRAGMA
query_only``, what SQLite does for a read-only database) make the writer spool; the spool is
written back by the next process on the same folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from router.db import make_engine
from router.policy import builtin_policy_path
from tests.conftest import (
    DATASETS,
    ROOT,
    _pg_admin,
    create_pg_database,
    drop_pg_database,
    running_service,
)

pytestmark = pytest.mark.asyncio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``tierwise serve`` subprocess; its output in ``log``."""

    def __init__(self, url: str, spool: Path, log: Path) -> None:
        self.port = _free_port()
        self.log = log
        env = {
            **os.environ,
            "TIERWISE_RUN_SCHEDULER": "false",
            "TIERWISE_POLICY_FILE": str(builtin_policy_path("default")),
            "TIERWISE_DATASETS_DIR": str(DATASETS),
            "TIERWISE_SPOOL_DIR": str(spool),
            "TIERWISE_SNAPSHOT_POLL_S": "0.2",
            "TIERWISE_DECISION_FLUSH_S": "0.1",
            "TIERWISE_RETRY_AFTER_S": "2",
            "TIERWISE_DB_CONNECT_TIMEOUT_S": "2",
            "TIERWISE_LOG_LEVEL": "INFO",
        }
        cmd = [sys.executable, "-m", "tierwise.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--database-url", url],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    def post(self, path: str, body: object) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", json=body, timeout=10)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def outage_db() -> Iterator[str]:
    url = create_pg_database("tierwise_outage")
    yield url
    name = url.rsplit("/", 1)[1]
    _pg_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    drop_pg_database(url)


def cut(url: str) -> None:
    """Make the test's own database refuse connections, and end the ones it has."""
    name = url.rsplit("/", 1)[1]
    _pg_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    _pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def restore(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _pg_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


async def counts(url: str, table: str, column: str) -> dict[str, int]:
    """Rows of ``table`` by ``column`` (its id): id -> how many rows carry it."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text(f"SELECT {column}, count(*) FROM {table} GROUP BY {column}")
            )
            return {str(k): int(n) for k, n in rows}
    finally:
        await engine.dispose()


def route(server: Server, request_id: str) -> httpx.Response:
    return server.post(
        "/v1/route", {"task_type": "classify", "input_tokens": 120, "request_id": request_id}
    )


def outcome(decision_id: str) -> dict[str, Any]:
    return {
        "decision_id": decision_id,
        "served_model": "gpt-4o-mini",
        "status": "ok",
        "latency_ms": 210.5,
        "usage": {"prompt_tokens": 120, "completion_tokens": 8},
    }


def wait_ready(server: Server, *, ready: bool, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = server.get("/readyz")
        body: dict[str, Any] = r.json()
        if (r.status_code == 200) == ready:
            return body
        assert time.monotonic() < deadline, (body, server.log.read_text())
        time.sleep(0.2)


async def test_an_outage_then_sigkill_loses_nothing_acknowledged(
    outage_db: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    log = tmp_path / "serve.log"
    server = Server(outage_db, spool, log)
    decisions: set[str] = set()
    outcomes: set[str] = set()
    try:
        wait_ready(server, ready=True)
        for i in range(5):
            r = route(server, f"before-{i}")
            assert r.status_code == 200, r.text
            decisions.add(r.json()["decision_id"])
        before = sorted(decisions)
        await asyncio.sleep(0.5)  # written by the batch writer

        cut(outage_db)
        during: list[str] = []
        for i in range(40):
            r = route(server, f"during-{i}")
            assert r.status_code == 200, r.text  # served from the snapshot
            during.append(r.json()["decision_id"])
            await asyncio.sleep(0.02)
        decisions.update(during)
        body = wait_ready(server, ready=False)
        assert "database" in body["failing"], body
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["field"] == "database"

        # Outcomes for decisions this process made (before and during): spooled, 200.
        for decision_id in [*before[:2], *during[:20]]:
            r = server.post("/v1/outcomes", outcome(decision_id))
            if r.status_code == 200:
                assert r.json()["results"][0]["note"].startswith("spooled"), r.text
                outcomes.add(decision_id)
            else:
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "2"
                assert r.json()["error"]["code"] == "unavailable"
        assert outcomes, "no outcome was spooled"
        # The same report again: acknowledged, stored once.
        assert server.post("/v1/outcomes", outcome(during[0])).status_code in (200, 503)
        # A decision this process never made cannot be checked without the database.
        r = server.post("/v1/outcomes", outcome("d" * 32))
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        assert r.json()["error"]["field"] == "decision_id"
        # An endpoint that needs the database to answer: 503 in the error shape, not a 500.
        r = server.get("/v1/escalations")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "unavailable"
        assert r.headers["retry-after"] == "2"

        # Everything acknowledged so far is on disk (nothing left only in memory).
        deadline = time.monotonic() + 10
        while server.get("/readyz").json()["checks"]["spool"]["buffered_rows"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
    finally:
        server.stop()

    text = log.read_text()
    assert text.count("database unreachable") == 1, text
    assert "Traceback" not in text, text

    restore(outage_db)
    server = Server(outage_db, spool, log)
    try:
        wait_ready(server, ready=True)
        stored_decisions = await counts(outage_db, "decision", "id")
        stored_outcomes = await counts(outage_db, "outcome", "decision_id")
    finally:
        server.stop()
    assert decisions <= set(stored_decisions), decisions - set(stored_decisions)
    assert all(stored_decisions[d] == 1 for d in decisions)
    assert set(stored_decisions) == decisions  # nothing more either
    assert set(stored_outcomes) == outcomes
    assert all(n == 1 for n in stored_outcomes.values())
    assert not list(spool.glob("*.spool")), "spool not written back"
    assert "rows spooled by an earlier run" in log.read_text()


async def test_sqlite_that_cannot_write_spools_and_the_next_process_writes_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tierwise.db"
    url = f"sqlite+aiosqlite:///{path}"
    from tierwise import migrate

    migrate.upgrade(url)
    spool = tmp_path / "spool"
    acked: list[str] = []
    async with running_service(url, spool_dir=spool, retry_after_s=3) as svc:
        engine = svc.app.state.engine

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _read_only(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA query_only = ON")
            cur.close()

        await engine.dispose()  # every new connection reads only
        for i in range(10):
            r = await svc.client.post(
                "/v1/route",
                json={"task_type": "classify", "input_tokens": 50, "request_id": f"sqlite-{i:04d}"},
            )
            assert r.status_code == 200, r.text
            acked.append(r.json()["decision_id"])
        deadline = time.monotonic() + 10
        while not svc.router.writer.spooling or svc.router.writer.depth:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        r = await svc.client.post("/v1/outcomes", json=outcome(acked[0]))
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["note"].startswith("spooled")
        r = await svc.client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "3"
        assert r.json()["checks"]["spool"]["spooled_rows"] == 11
        assert (await svc.client.get("/healthz")).status_code == 200  # liveness only
        # A graceful stop during the outage: what is buffered goes to the spool too.
    assert list(spool.glob("*.spool"))
    async with running_service(url, policy=None, spool_dir=spool) as svc:
        deadline = time.monotonic() + 10
        while svc.router.writer.spooling:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert set(await counts(url, "decision", "id")) == set(acked)
    assert set(await counts(url, "outcome", "decision_id")) == {acked[0]}
    assert not list(spool.glob("*.spool"))


_ = asyncpg  # the PostgreSQL half needs the driver


async def test_sqlite_back_in_the_same_process_writes_the_spool_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tierwise import migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'tierwise.db'}"
    migrate.upgrade(url)
    caplog.set_level(logging.INFO, logger="router.health")
    async with running_service(url, spool_dir=tmp_path / "spool") as svc:
        engine = svc.app.state.engine

        def read_only(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA query_only = ON")
            cur.close()

        sa.event.listen(engine.sync_engine, "connect", read_only)
        await engine.dispose()
        acked = []
        for i in range(6):
            body = {"task_type": "classify", "input_tokens": 50, "request_id": f"back-{i:04d}"}
            r = await svc.client.post("/v1/route", json=body)
            assert r.status_code == 200
            acked.append(r.json()["decision_id"])
        r = await svc.client.post("/v1/outcomes", json=[outcome(acked[0]), outcome(acked[5])])
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == 2  # spooled, even before the writer tried to write
        assert svc.router.writer.spooling
        sa.event.remove(engine.sync_engine, "connect", read_only)
        await engine.dispose()  # writable connections again
        deadline = time.monotonic() + 10
        while svc.router.writer.spooling:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await svc.client.get("/readyz")).status_code == 200
        # An outcome after the spool was written back goes straight to the database again.
        r = await svc.client.post("/v1/outcomes", json=outcome(acked[1]))
        assert (
            r.json()["results"][0]["note"] is None
            or "spooled" not in r.json()["results"][0]["note"]
        )
    assert set(await counts(url, "decision", "id")) == set(acked)
    assert set(await counts(url, "outcome", "decision_id")) == {acked[0], acked[1], acked[5]}
    lines = [r.getMessage() for r in caplog.records if r.name == "router.health"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unreachable (writes: OperationalError: attempt to write")
    assert lines[1].startswith("database reachable again after ")
    assert lines[1].endswith("8 rows spooled meanwhile")
