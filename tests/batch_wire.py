"""A loopback server of both providers' batch endpoints, for testing the batch adapters through
the real SDKs.

OpenAI (API reference "Files", "Batch"): ``POST /v1/files`` (multipart upload, purpose
``batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}``.
Anthropic ("Message Batches"): ``POST /v1/messages/batches``, ``GET
/v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results`` (JSONL; the batch's
``results_url`` points here).

A batch has ended as soon as it is created; what it ended with is scripted: ``openai_outcome``
gets the uploaded input lines (dicts) and returns ``(status, output lines, error lines)`` (None
for a file that is absent), ``anthropic_outcome`` gets the submitted requests and returns the
result rows, in whatever order and with whatever ids the test wants. ``not_found_after_create``
answers the first retrieve of each new batch 404, as the APIs may right after create. With
``hold`` set, a new batch stays in progress (its scripted outcome kept) until :meth:`release`
or a cancel (``POST /v1/batches/{id}/cancel``, ``POST /v1/messages/batches/{id}/cancel``: the
batch ends cancelled, every request ``batch_cancelled`` / ``canceled``). ``create_gate``, when
set, is waited on (in a worker thread) before a create answers: a test holds it closed to
catch a submission mid-call (``create_arrived`` is set when a create came in). Every
request is recorded in ``hits`` as (method, path).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Lines = list[dict[str, Any]]
OpenAIOutcome = Callable[[Lines], tuple[str, Lines | None, Lines | None]]
AnthropicOutcome = Callable[[Lines], Lines]


def openai_ok(custom_id: str, text: str, prompt: int, completion: int) -> dict[str, Any]:
    """An output line answering ``custom_id`` with a 200 chat completion."""
    body = {
        "id": f"chatcmpl-{custom_id}",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": "req", "body": body},
        "error": None,
    }


def anthropic_succeeded(
    custom_id: str, text: str, tokens_in: int, tokens_out: int
) -> dict[str, Any]:
    """A ``succeeded`` result row with a Messages reply."""
    message = {
        "id": f"msg_{custom_id}",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-20241022",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
    }
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def anthropic_errored(custom_id: str, kind: str) -> dict[str, Any]:
    """An ``errored`` result row of error type ``kind``."""
    error = {"type": "error", "error": {"type": kind, "message": kind}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


class BatchWire:
    """The server; ``start()`` / ``stop()`` or a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.files: dict[str, bytes] = {}
        self.openai_batches: dict[str, dict[str, Any]] = {}
        self.anthropic_batches: dict[str, dict[str, Any]] = {}
        self.anthropic_results: dict[str, bytes] = {}
        self.submitted: dict[str, Lines] = {}
        self.hits: list[tuple[str, str]] = []
        self.openai_outcome: OpenAIOutcome = lambda lines: ("completed", [], None)
        self.anthropic_outcome: AnthropicOutcome = lambda requests: []
        self.not_found_after_create = False
        self.hold = False
        self.create_gate: threading.Event | None = None
        self.create_arrived = threading.Event()
        self._held: dict[str, dict[str, Any]] = {}
        self._unseen: set[str] = set()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/v1/files", self._upload, methods=["POST"]),
                Route("/v1/files/{fid}/content", self._content, methods=["GET"]),
                Route("/v1/batches", self._openai_create, methods=["POST"]),
                Route("/v1/batches/{bid}", self._openai_get, methods=["GET"]),
                Route("/v1/batches/{bid}/cancel", self._openai_cancel, methods=["POST"]),
                Route("/v1/messages/batches", self._anthropic_create, methods=["POST"]),
                Route("/v1/messages/batches/{bid}", self._anthropic_get, methods=["GET"]),
                Route("/v1/messages/batches/{bid}/results", self._anthropic_rows, methods=["GET"]),
                Route(
                    "/v1/messages/batches/{bid}/cancel", self._anthropic_cancel, methods=["POST"]
                ),
            ]
        )
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none", http="h11"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BatchWire:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("batch wire did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> BatchWire:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _hit(self, request: Request) -> None:
        with self._lock:
            self.hits.append((request.method, request.url.path))

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{next(self._ids)}"

    # -- OpenAI --

    async def _upload(self, request: Request) -> Response:
        self._hit(request)
        raw = await request.body()
        # The multipart body's file part: its JSONL lines are the lines that start with '{'.
        lines = [ln for ln in raw.split(b"\r\n") if ln.startswith(b"{")]
        text = b"\n".join(b for ln in lines for b in ln.split(b"\n") if b.strip()) + b"\n"
        fid = self._new_id("file-")
        self.files[fid] = text
        return JSONResponse(
            {
                "id": fid,
                "object": "file",
                "bytes": len(text),
                "created_at": int(time.time()),
                "filename": "grading.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def _content(self, request: Request) -> Response:
        self._hit(request)
        data = self.files.get(request.path_params["fid"])
        if data is None:
            return JSONResponse({"error": {"message": "no such file"}}, status_code=404)
        return Response(data, media_type="application/octet-stream")

    def _file(self, rows: Lines | None) -> str | None:
        if rows is None:
            return None
        fid = self._new_id("file-")
        self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        return fid

    async def _gate(self) -> None:
        self.create_arrived.set()
        gate = self.create_gate
        if gate is not None:
            await asyncio.to_thread(gate.wait)

    def release(self) -> None:
        """End every held batch with its scripted outcome."""
        with self._lock:
            held, self._held = self._held, {}
        for bid, ended in held.items():
            if bid in self.openai_batches:
                self.openai_batches[bid].update(ended)
            else:
                self.anthropic_batches[bid].update(ended)

    async def _openai_create(self, request: Request) -> Response:
        self._hit(request)
        await self._gate()
        body = await request.json()
        lines = [json.loads(ln) for ln in self.files[body["input_file_id"]].splitlines() if ln]
        status, output, errors = self.openai_outcome(lines)
        bid = self._new_id("batch_")
        self.submitted[bid] = lines
        self.openai_batches[bid] = {
            "id": bid,
            "object": "batch",
            "endpoint": body["endpoint"],
            "completion_window": body["completion_window"],
            "input_file_id": body["input_file_id"],
            "created_at": int(time.time()),
            "status": status,
            "output_file_id": self._file(output),
            "error_file_id": self._file(errors),
            "request_counts": {"total": len(lines), "completed": len(output or []), "failed": 0},
        }
        if self.hold:
            batch = self.openai_batches[bid]
            self._held[bid] = {k: batch[k] for k in ("status", "output_file_id", "error_file_id")}
            batch.update(status="in_progress", output_file_id=None, error_file_id=None)
        if self.not_found_after_create:
            self._unseen.add(bid)
        return JSONResponse({**self.openai_batches[bid], "status": "validating"})

    async def _openai_cancel(self, request: Request) -> Response:
        self._hit(request)
        bid = request.path_params["bid"]
        with self._lock:
            self._held.pop(bid, None)
        batch = self.openai_batches[bid]
        if batch["status"] in ("validating", "in_progress"):
            errors = [
                {
                    "id": f"batch_req_{line['custom_id']}",
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {"code": "batch_cancelled", "message": "cancelled"},
                }
                for line in self.submitted[bid]
            ]
            batch.update(status="cancelled", output_file_id=None, error_file_id=self._file(errors))
        return JSONResponse({**batch, "status": "cancelling"})

    def _visible(self, bid: str) -> bool:
        with self._lock:
            if bid in self._unseen:
                self._unseen.discard(bid)
                return False
            return True

    async def _openai_get(self, request: Request) -> Response:
        self._hit(request)
        bid = request.path_params["bid"]
        if bid not in self.openai_batches or not self._visible(bid):
            error = {"message": "No batch found", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=404)
        return JSONResponse(self.openai_batches[bid])

    # -- Anthropic --

    async def _anthropic_create(self, request: Request) -> Response:
        self._hit(request)
        await self._gate()
        body = await request.json()
        requests = list(body["requests"])
        rows = self.anthropic_outcome(requests)
        bid = self._new_id("msgbatch_")
        self.submitted[bid] = requests
        self.anthropic_results[bid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        now = "2026-01-01T00:00:00Z"
        self.anthropic_batches[bid] = {
            "id": bid,
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {
                "processing": 0,
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": now,
            "expires_at": now,
            "ended_at": now,
            "results_url": f"{self.url}/v1/messages/batches/{bid}/results",
        }
        if self.hold:
            self._held[bid] = {"processing_status": "ended"}
            self.anthropic_batches[bid]["processing_status"] = "in_progress"
        if self.not_found_after_create:
            self._unseen.add(bid)
        return JSONResponse(
            {**self.anthropic_batches[bid], "processing_status": "in_progress", "results_url": None}
        )

    async def _anthropic_cancel(self, request: Request) -> Response:
        self._hit(request)
        bid = request.path_params["bid"]
        with self._lock:
            self._held.pop(bid, None)
        batch = self.anthropic_batches[bid]
        if batch["processing_status"] == "in_progress":
            rows = [
                {"custom_id": r["custom_id"], "result": {"type": "canceled"}}
                for r in self.submitted[bid]
            ]
            self.anthropic_results[bid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            batch["processing_status"] = "ended"
        return JSONResponse({**batch, "processing_status": "canceling"})

    async def _anthropic_get(self, request: Request) -> Response:
        self._hit(request)
        bid = request.path_params["bid"]
        if bid not in self.anthropic_batches or not self._visible(bid):
            error = {"type": "not_found_error", "message": "batch not found"}
            return JSONResponse({"type": "error", "error": error}, status_code=404)
        return JSONResponse(self.anthropic_batches[bid])

    async def _anthropic_rows(self, request: Request) -> Response:
        self._hit(request)
        data = self.anthropic_results[request.path_params["bid"]]
        return Response(data, media_type="application/binary")
