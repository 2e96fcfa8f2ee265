"""The spool file format and bounds, the outage log lines, and /readyz beside /healthz."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import SQLModel

from router.errors import InvalidInput
from router.health import DatabaseHealth
from router.models import Decision, Outcome, Sample
from router.spool import Spool, SpoolFull, SpoolInUse
from tests.conftest import running_service

TABLES: list[type[SQLModel]] = [Decision, Outcome, Sample]


def row(i: int) -> dict[str, Any]:
    return {
        "id": f"d{i:031d}",
        "task_type": "classify",
        "task_class": "classify",
        "meta": {"created_at": "not a timestamp column: stays text"},
        "created_at": datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC),
    }


def test_rows_come_back_in_order_with_their_timestamps(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TABLES, max_bytes=1 << 20)
    spool.append([(Decision, row(1)), (Decision, row(2))])
    spool.append([(Outcome, {"decision_id": row(1)["id"], "created_at": row(1)["created_at"]})])
    assert spool.rows == 3
    (path,) = spool.seal()
    back = spool.read(path)
    assert [t for t, _ in back] == [Decision, Decision, Outcome]
    assert back[0][1] == row(1)  # the aware datetime, and the JSON value left as it was
    spool.remove(path)
    assert spool.empty and spool.size == 0
    assert not list(tmp_path.glob("*.spool"))
    spool.close()


def test_a_torn_last_line_is_skipped_and_a_new_process_finds_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path, TABLES, max_bytes=1 << 20)
    spool.append([(Decision, row(1)), (Decision, row(2))])
    spool.close()
    (path,) = tmp_path.glob("*.spool")
    with path.open("ab") as f:
        f.write(b'["decision",{"id":"cut sho')  # a crash mid-write: never acknowledged
    again = Spool(tmp_path, TABLES, max_bytes=1 << 20)
    assert again.rows == 2
    assert [r["id"] for _, r in again.read(path)] == [row(1)["id"], row(2)["id"]]
    # Appends after a restart go to a new segment, after the old one.
    again.append([(Decision, row(3))])
    paths = again.seal()
    assert paths[0] == path and len(paths) == 2
    assert [r["id"] for p in paths for _, r in again.read(p)] == [row(i)["id"] for i in (1, 2, 3)]
    again.close()


def test_the_bound_refuses_a_whole_append(tmp_path: Path) -> None:
    one = len(Spool(tmp_path / "probe", TABLES, max_bytes=1).encode([(Decision, row(1))]))
    spool = Spool(tmp_path / "s", TABLES, max_bytes=one * 2)
    spool.append([(Decision, row(1))])
    assert spool.room()
    with pytest.raises(SpoolFull):
        spool.append([(Decision, row(2)), (Decision, row(3))])
    assert spool.rows == 1  # nothing of the refused append was written
    spool.append([(Decision, row(2))])
    assert not spool.room()


def test_one_process_per_folder(tmp_path: Path) -> None:
    first = Spool(tmp_path, TABLES, max_bytes=1 << 20)
    with pytest.raises(SpoolInUse, match="TIERWISE_SPOOL_DIR"):
        Spool(tmp_path, TABLES, max_bytes=1 << 20)
    first.close()
    Spool(tmp_path, TABLES, max_bytes=1 << 20).close()


def test_an_outage_is_two_log_lines_whatever_the_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    health = DatabaseHealth(clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="router.health")
    err = ConnectionRefusedError(111, "Connect call failed")
    for _ in range(50):
        health.failed("writer", err)
        health.failed("snapshot", err)
    health.spooled += 7
    health.ok("snapshot")  # reads work again, writes still fail: still down, nothing said
    assert health.down
    now[0] += 12.5
    health.ok("writer")
    assert not health.down
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unreachable (writer: ConnectionRefusedError: ")
    assert lines[1] == (
        "database reachable again after 12.5 s: 100 failed attempts, 7 rows spooled meanwhile"
    )


@pytest.mark.asyncio
async def test_readyz_says_every_check_and_healthz_only_liveness(
    database_url: str, tmp_path: Path
) -> None:
    async with running_service(database_url, spool_dir=tmp_path / "spool") as svc:
        r = await svc.client.get("/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready" and body["failing"] == []
        assert set(body["checks"]) == {
            "database",
            "snapshot",
            "spool",
            "jobs",
            "reference_provider",
        }
        assert body["checks"]["spool"]["spooled_rows"] == 0
        assert (await svc.client.get("/healthz")).json()["status"] == "ok"


@pytest.mark.asyncio
async def test_readyz_without_a_policy_names_the_snapshot(
    database_url: str, tmp_path: Path
) -> None:
    async with running_service(database_url, policy=None, spool_dir=tmp_path / "s") as svc:
        r = await svc.client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        body = r.json()
        assert body["failing"] == ["snapshot"]
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["field"] == "snapshot"
        assert "tierwise policy apply" in body["error"]["message"]
        assert (await svc.client.get("/healthz")).status_code == 200


@pytest.mark.asyncio
async def test_a_spool_folder_held_elsewhere_stops_the_start_with_one_line(
    database_url: str, tmp_path: Path
) -> None:
    held = Spool(tmp_path / "spool", TABLES, max_bytes=1 << 20)
    try:
        with pytest.raises(InvalidInput, match="give each process its own TIERWISE_SPOOL_DIR"):
            async with running_service(database_url, spool_dir=tmp_path / "spool"):
                pass
    finally:
        held.close()


def test_a_write_that_worked_clears_every_source(caplog: pytest.LogCaptureFixture) -> None:
    health = DatabaseHealth()
    caplog.set_level(logging.INFO, logger="router.health")
    health.failed("jobs", TimeoutError("timed out"))
    health.failed("snapshot", TimeoutError("timed out"))
    health.ok("jobs")  # one source back: the snapshot poller still fails
    assert health.failing() == {"snapshot": "TimeoutError: timed out"}
    health.ok("writes")
    assert not health.down
    assert len(caplog.records) == 2
    health.ok("writes")  # nothing was failing: nothing said
    assert len(caplog.records) == 2
