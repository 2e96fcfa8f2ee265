"""The overall request-body limit: an ASGI middleware in front of every route.

A request whose ``Content-Length`` is over the limit is answered 413 before its body is read; a
body without one (chunked transfer encoding) is counted as it arrives and answered 413 at the
first byte past the limit, so no route ever holds more than the limit in memory. The answer is
the service's JSON error shape (:func:`router.errors.error_body`), code ``request_too_large``,
field ``body``.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.errors import error_body

DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""8 MiB: above the largest text a field may hold (``router.schemas.MAX_TEXT_CHARS``, 2M
characters) and a base64 image of a few MB in a gateway call; far below what would strain one
process (the issue's 10 messages of 2 MB each are refused)."""


class RequestTooLarge(HTTPException):
    """A body over the limit, raised from ``receive`` while the route reads it (a Starlette
    ``HTTPException``, so FastAPI's body parsing re-raises it instead of answering 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))
        self.limit = limit


def _message(limit: int) -> str:
    return (
        f"the request body is over the limit of {limit} bytes (TIERWISE_MAX_REQUEST_BYTES); "
        "send less per request"
    )


def too_large_body(limit: int) -> bytes:
    """The 413 answer's JSON body."""
    err = error_body("request_too_large", _message(limit), "body", 413)
    return json.dumps({"error": err}, separators=(",", ":")).encode()


class BodyLimit:
    """ASGI middleware: refuse HTTP request bodies over ``max_bytes`` with 413.

    Args:
        app: the wrapped application.
        max_bytes: the largest body accepted, bytes (``Settings.max_request_bytes``).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the HTTP server refuses a malformed length itself
                if declared > limit:
                    await _refuse(send, limit)
                    return
                break
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except RequestTooLarge:
            if started:
                raise
            await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body = too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
