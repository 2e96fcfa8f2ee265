"""Structured logs: structlog configured once per process (``tierwise serve``, ``tierwise worker``),
the standard library's ``logging`` routed through the same renderer, and the request's ids bound
for every line logged while it is served.

**Format** (``TIERWISE_LOG_FORMAT`` or ``--log-format``): ``json``, one JSON object a line::

    {"event": "gateway: small failed (...); trying the next model", "level": "info",
     "logger": "router.gateway.service", "timestamp": "2026-12-02T04:10:00.123456Z",
     "request_id": "5f0c9a1e2b3d4c6f", "decision_id": "3e6e41ab...", "method": "POST",
     "path": "/v1/chat/completions"}

or ``console``, the same fields for a terminal. Module code keeps using ``logging.getLogger``;
every record goes through :class:`structlog.stdlib.ProcessorFormatter`, so library lines
(uvicorn, SQLAlchemy, APScheduler) come out in the same shape.

**Ids.** :class:`RequestContext` (pure ASGI middleware: no ``BaseHTTPMiddleware`` task and
stream wrapping) binds ``request_id`` (the caller's ``X-Request-Id`` when it sends a sane one,
else 16 random hex characters; echoed as the ``x-request-id`` response header), ``method`` and
``path``; the decision's id is bound where the decision is made (``POST /v1/route`` and the
gateway bind ``decision_id`` through ``structlog.contextvars``). With ``access_log`` each
request ends with one ``request`` line carrying its status and duration (ms).
"""

from __future__ import annotations

import logging
import random
import re
import sys
import time
from typing import Any, Literal, TextIO

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["json", "console"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_access = logging.getLogger("tierwise.access")


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "console", *, stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library's logging to one handler on ``stream``
    (default ``sys.stderr``) at ``level``, rendered as ``fmt``. Called once at process start;
    calling it again replaces the handler (tests).

    Raises:
        ValueError: ``level`` is not a logging level name, or ``fmt`` not json / console.
    """
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be json or console, not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("tierwise")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn's loggers carry handlers of their own unless told otherwise: send them to root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
            break
    # Not a secret, only unique: no system call per request (os.urandom is one).
    return f"{random.getrandbits(64):016x}"


class RequestContext:
    """Pure ASGI middleware: binds ``request_id``, ``method`` and ``path`` for the request's
    log lines (module doc), answers with ``x-request-id``, and with ``access_log`` logs one
    ``request`` line (status, duration in ms) when the response has started."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id, method=scope["method"], path=scope["path"]
        )
        header = (b"x-request-id", request_id.encode("latin-1"))
        status: list[int] = []
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers: Any = message.setdefault("headers", [])
                if isinstance(headers, list):
                    headers.append(header)
                else:  # an immutable sequence
                    message["headers"] = [*headers, header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                _access.info(
                    "request",
                    extra={
                        "status": status[0] if status else None,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    },
                )
            # Put back what the caller's context held (an in-process ASGI client runs the app in
            # its own task), and drop the decision id the handler bound.
            structlog.contextvars.unbind_contextvars("decision_id")
            structlog.contextvars.reset_contextvars(**tokens)
