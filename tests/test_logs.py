"""Structured logs: ``tierwise serve --log-format json`` and ``tierwise worker`` write one JSON
object a line, library lines included, and a served request's lines carry its request id and
decision id."""

from __future__ import annotations

import io
import json
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

import httpx
import pytest

from tests.test_gateway import HELLO, gateway_on
from tests.wire import OPENAI_PATH, Reply, error_reply, openai_chat, openai_usage
from tierwise.logs import configure_logging

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed as a JSON object (a line that is not one fails)."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def test_serve_writes_json_lines_with_the_request_and_decision_ids(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/logs.db"
    env = {
        **os.environ,
        "TIERWISE_DATASETS_DIR": str(ROOT / "datasets"),
        "TIERWISE_POLICY_FILE": str(ROOT / "router" / "policies" / "default.toml"),
        "TIERWISE_RUN_SCHEDULER": "false",
    }
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tierwise.cli",
            "serve",
            "--port",
            str(port),
            "--access-log",
            "--log-format",
            "json",
            "--database-url",
            db,
        ],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180  # a start-up on a loaded 2-core machine is slow
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v1/route",
            json={"task_type": "classify", "input_tokens": 12},
            headers={"x-request-id": "caller-req-42"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-request-id"] == "caller-req-42"
        decision_id = resp.json()["decision_id"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = json_lines(err.decode())  # every line, uvicorn's and SQLAlchemy's too, is JSON
    [served] = [
        line for line in lines if line["event"] == "request" and line.get("path") == "/v1/route"
    ]
    assert served["request_id"] == "caller-req-42"
    assert served["decision_id"] == decision_id
    assert (served["method"], served["status"], served["level"]) == ("POST", 200, "info")
    assert served["duration_ms"] >= 0 and served["timestamp"].endswith("Z")
    # A library's own line (uvicorn's start-up), routed through the same renderer.
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    # Start-up lines carry no request's ids.
    keys_line = next(line for line in lines if "no API keys" in line["event"])
    assert "request_id" not in keys_line and keys_line["level"] == "warning"


def test_an_unknown_log_format_is_refused_naming_the_option(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "worker", "--log-format", "xml"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--log-format" in proc.stderr and "json or console" in proc.stderr


@pytest.fixture
def captured_json_log() -> Iterator[io.StringIO]:
    """The process's logging configured as ``tierwise serve --log-format json`` does, into a
    buffer; the test runner's handlers are put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


@pytest.mark.asyncio
async def test_a_gateway_fallback_line_carries_the_calls_ids(
    database_url: str, captured_json_log: io.StringIO
) -> None:
    async with gateway_on(database_url) as gw:
        gw.wire.enqueue(
            OPENAI_PATH,
            error_reply(OPENAI_PATH, 503),
            Reply(body=openai_chat("spam", usage=openai_usage(10, 2))),
        )
        raw = await gw.client.chat.completions.with_raw_response.create(
            model="tierwise/classify", messages=HELLO
        )
    lines = json_lines(captured_json_log.getvalue())
    [fallback] = [line for line in lines if "trying the next model" in line["event"]]
    assert fallback["decision_id"] == raw.headers["x-tierwise-decision-id"]
    assert fallback["request_id"] == raw.headers["x-request-id"]
    assert len(fallback["request_id"]) == 16
    assert (fallback["path"], fallback["logger"]) == (
        "/v1/chat/completions",
        "router.gateway.service",
    )
