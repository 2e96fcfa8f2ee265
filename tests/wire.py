"""A scriptable HTTP server on 127.0.0.1 that speaks the OpenAI Chat Completions and Anthropic
Messages wire formats, for testing the provider adapters through the real SDKs.

It is a Starlette app served by uvicorn in a background thread on a random free port. Each
path (:data:`OPENAI_PATH`, :data:`ANTHROPIC_PATH`, :data:`EMBEDDINGS_PATH`) has a FIFO queue
of :class:`Reply` (status, headers, JSON body, delay in s); when a queue is empty the path's
responder, if any, answers (a function of the request), else a 418 says nothing was scripted.
Every request is recorded as a :class:`Hit` with its arrival time (``time.monotonic()``, s)
taken on the server, so tests can measure how long a client waited between attempts.

Streams: a :class:`Reply` with ``events`` (a list of :class:`Event`, each with its own delay
in s, and optionally a :class:`Cut`) answers with Server-Sent Events (``text/event-stream``),
each event written and flushed on its own through Starlette's ``StreamingResponse``. A
:class:`Cut` drops the connection at that point (no end of the chunked body: the client sees a
truncated response). A client that goes away before the last event was sent is recorded
(:meth:`WireServer.disconnects`), so a test can assert that closing a stream on the client
side cancelled the upstream call. :func:`openai_stream` / :func:`anthropic_stream` build
event lists in each API's streaming format; :func:`openai_stream_error` /
:func:`anthropic_stream_error` an error event to put mid-stream.

Body shapes follow the providers' API references: OpenAI "The chat completion object" and
error object; Anthropic Messages response and "Errors" (``{"type": "error", "error": ...}``).

Structured replies: :func:`structured_request` reads what a recorded request asked for (OpenAI
``response_format`` json_schema, or Anthropic ``tools`` + a forced ``tool_choice``) and
:func:`verdict_reply` answers it in kind (OpenAI: ``message.content`` holding the JSON string;
Anthropic: a ``tool_use`` content block whose ``input`` is the object, ``stop_reason``
``tool_use``). Request bodies are in each :class:`Hit`, so tests assert what was asked for.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
EMBEDDINGS_PATH = "/v1/embeddings"
"""OpenAI's embeddings endpoint (any OpenAI-compatible server's): :func:`openai_embeddings`."""


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: ``delay_s`` (s) is slept before it is sent.

    ``data`` is JSON-encoded, except a ``str``, which is sent as is (OpenAI's ``[DONE]``).
    ``event`` None writes ``data: ...`` alone (OpenAI's format); a name writes
    ``event: <name>`` before it (Anthropic's). Either ends with a blank line.
    """

    data: Any
    event: str | None = None
    delay_s: float = 0.0

    def encode(self) -> bytes:
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.event}\n" if self.event is not None else ""
        return f"{head}data: {data}\n\n".encode()


@dataclass(frozen=True)
class Cut:
    """In a stream's events: after ``delay_s`` (s), drop the connection without ending the
    body (HTTP/1.1 chunked: no last chunk), as a dying upstream does."""

    delay_s: float = 0.0


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP response: ``body`` is JSON-encoded (``bytes`` are sent as they are,
    for replies that are not JSON); ``delay_s`` is slept first.

    With ``events`` the reply is a stream instead: ``status`` and ``headers`` as given, content
    type ``text/event-stream``, then each event in turn (``body`` is ignored).
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    events: Sequence[Event | Cut] | None = None


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it; ``at`` is ``time.monotonic()`` on arrival, s."""

    path: str
    at: float
    headers: dict[str, str]
    body: Any


Responder = Callable[[Hit], Reply]


# ---- bodies ----------------------------------------------------------------------------------


def openai_usage(
    prompt: int, completion: int, *, cached: int | None = 0, reasoning: int | None = 0
) -> dict[str, Any]:
    """An OpenAI ``usage`` object; ``cached`` / ``reasoning`` None send null detail objects."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": None if cached is None else {"cached_tokens": cached},
        "completion_tokens_details": None if reasoning is None else {"reasoning_tokens": reasoning},
    }
    return usage


def openai_chat(
    text: str | None,
    *,
    finish_reason: str = "stop",
    usage: Mapping[str, Any] | None = None,
    refusal: str | None = None,
    model: str = "gpt-4o",
) -> dict[str, Any]:
    """A Chat Completions response body with one choice."""
    return {
        "id": "chatcmpl-wire",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(usage) if usage is not None else openai_usage(100, 20),
    }


def openai_embeddings(
    vectors: Sequence[Sequence[float]], *, model: str, prompt_tokens: int
) -> dict[str, Any]:
    """An OpenAI embeddings reply (API reference, "The embedding object" / "Create
    embeddings"): one ``{"object": "embedding", "index", "embedding"}`` per vector, in order,
    and ``usage`` with ``prompt_tokens`` and ``total_tokens``."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def openai_error(status: int, message: str, *, kind: str = "server_error") -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def anthropic_usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int | None = 0,
    cache_write: int | None = 0,
    thinking: int | None = None,
) -> dict[str, Any]:
    """An Anthropic ``usage`` object; None sends null counts / a null details object."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
        "output_tokens_details": None if thinking is None else {"thinking_tokens": thinking},
    }


def anthropic_message(
    text: str | None,
    *,
    stop_reason: str = "end_turn",
    usage: Mapping[str, Any] | None = None,
    model: str = "claude-3-5-sonnet",
) -> dict[str, Any]:
    """A Messages response body; ``text`` None sends no content blocks."""
    return {
        "id": "msg_wire",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": dict(usage) if usage is not None else anthropic_usage(100, 20),
    }


def anthropic_tool_use(
    value: Mapping[str, Any],
    *,
    name: str = "verdict",
    stop_reason: str = "tool_use",
    usage: Mapping[str, Any] | None = None,
    model: str = "claude-3-5-sonnet",
) -> dict[str, Any]:
    """A Messages response body whose only content block is a ``tool_use`` of tool ``name``
    with ``input`` ``value`` (Anthropic Messages response, ``ToolUseBlock``)."""
    body = anthropic_message(None, stop_reason=stop_reason, usage=usage, model=model)
    body["content"] = [{"type": "tool_use", "id": "toolu_wire", "name": name, "input": dict(value)}]
    return body


def structured_request(hit: Hit) -> str | None:
    """The schema name ``hit`` asked its reply to follow, or None for a plain text request:
    OpenAI ``response_format.json_schema.name`` (type ``json_schema``), Anthropic
    ``tool_choice.name`` (type ``tool``, naming one of ``tools``)."""
    body = hit.body if isinstance(hit.body, dict) else {}
    if hit.path == OPENAI_PATH:
        fmt = body.get("response_format") or {}
        return fmt["json_schema"]["name"] if fmt.get("type") == "json_schema" else None
    choice = body.get("tool_choice") or {}
    names = {tool.get("name") for tool in body.get("tools") or []}
    return choice["name"] if choice.get("type") == "tool" and choice["name"] in names else None


def verdict_reply(hit: Hit, value: Mapping[str, Any], *, text: str | None = None) -> Reply:
    """Answer ``hit`` with the object ``value`` the way its API returns a structured reply
    (see :func:`structured_request`); a plain request gets ``text`` (default: the JSON)."""
    name = structured_request(hit)
    if name is None:
        plain = json.dumps(value) if text is None else text
        if hit.path == OPENAI_PATH:
            return Reply(body=openai_chat(plain))
        return Reply(body=anthropic_message(plain))
    if hit.path == OPENAI_PATH:
        return Reply(body=openai_chat(json.dumps(value)))
    return Reply(body=anthropic_tool_use(value, name=name))


def anthropic_error(message: str, *, kind: str = "api_error") -> dict[str, Any]:
    """An Anthropic error body (``rate_limit_error``, ``overloaded_error``, ...)."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_reply(path: str, status: int, *, headers: Mapping[str, str] | None = None) -> Reply:
    """An error response in the wire format of ``path``."""
    if path == ANTHROPIC_PATH:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        body = anthropic_error(f"wire {status}", kind=kind)
    else:
        body = openai_error(
            status,
            f"wire {status}",
            kind="rate_limit_exceeded" if status == 429 else "server_error",
        )
    return Reply(status=status, body=body, headers=dict(headers or {}))


# ---- streams (Server-Sent Events) -------------------------------------------------------------


@dataclass(frozen=True)
class StreamedCall:
    """One tool call in a scripted stream: its id (``call_...`` / ``toolu_...``), the tool's
    name, and its JSON arguments as the fragments they arrive in (joined, a JSON object)."""

    id: str
    name: str
    arguments: Sequence[str]


def _delayed(events: list[Event], delay_s: float) -> list[Event]:
    return [Event(e.data, e.event, delay_s) for e in events] if delay_s > 0 else events


def openai_stream(
    text_pieces: Sequence[str],
    *,
    tool_calls: Sequence[StreamedCall] | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, Any] | None = None,
    include_usage: bool = True,
    model: str = "gpt-4o",
    delay_s: float = 0.0,
) -> list[Event]:
    """A streamed Chat Completions reply (OpenAI API reference, "The chat completion chunk
    object"; ``stream_options.include_usage``), ``delay_s`` (s) before every event.

    Chunks (``object: "chat.completion.chunk"``, one choice at ``index`` 0): the first delta
    has ``role: "assistant"``; one ``content`` delta per text piece; per tool call, a delta
    ``tool_calls: [{"index", "id", "type": "function", "function": {"name", "arguments": ""}}]``
    and then one ``{"index", "function": {"arguments": <fragment>}}`` per fragment; a last
    delta ``{}`` with ``finish_reason`` (None: ``tool_calls`` when there are tool calls, else
    ``stop``). With ``include_usage`` every chunk has ``usage: null`` and a final chunk has
    ``choices: []`` and ``usage`` (default :func:`openai_usage` (100, 20)). Then ``[DONE]``.
    """
    calls = list(tool_calls or [])
    finish = finish_reason or ("tool_calls" if calls else "stop")

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> Event:
        body: dict[str, Any] = {
            "id": "chatcmpl-wire",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_wire",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return Event(body)

    events = [chunk({"role": "assistant", "content": "" if text_pieces else None})]
    events += [chunk({"content": piece}) for piece in text_pieces]
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            for fragment in call.arguments
        ]
    events.append(chunk({}, finish))
    if include_usage:
        last = chunk(None)
        last.data["usage"] = dict(usage) if usage is not None else openai_usage(100, 20)
        events.append(last)
    events.append(Event("[DONE]"))
    return _delayed(events, delay_s)


def openai_stream_error(message: str, *, kind: str = "server_error") -> Event:
    """An error in the middle of an OpenAI stream: ``data: {"error": {...}}`` (the error
    object; the openai SDK raises ``APIError`` on it)."""
    return Event(openai_error(500, message, kind=kind))


def anthropic_stream(
    text_pieces: Sequence[str],
    *,
    tool_uses: Sequence[StreamedCall] | None = None,
    stop_reason: str | None = None,
    usage: Mapping[str, Any] | None = None,
    model: str = "claude-3-5-sonnet",
    delay_s: float = 0.0,
) -> list[Event]:
    """A streamed Messages reply (Anthropic API reference, "Streaming Messages"), ``delay_s``
    (s) before every event.

    ``message_start`` (``message.usage``: the input, cache read and cache creation counts of
    ``usage`` and ``output_tokens`` 1), a ``ping``, then content blocks in order (index 0, 1,
    ...): a text block when there are text pieces (``content_block_start`` with
    ``{"type": "text", "text": ""}``, one ``text_delta`` per piece, ``content_block_stop``), one
    ``tool_use`` block per call (``input: {}`` at the start, one ``input_json_delta``
    ``partial_json`` per fragment); ``message_delta`` with ``delta.stop_reason`` (None:
    ``tool_use`` when there are tool uses, else ``end_turn``) and ``usage`` (cumulative:
    the whole of ``usage``, default :func:`anthropic_usage` (100, 20)); ``message_stop``.
    """
    final = dict(usage) if usage is not None else anthropic_usage(100, 20)
    calls = list(tool_uses or [])
    stop = stop_reason or ("tool_use" if calls else "end_turn")
    start_usage = {
        "input_tokens": final.get("input_tokens"),
        "cache_creation_input_tokens": final.get("cache_creation_input_tokens"),
        "cache_read_input_tokens": final.get("cache_read_input_tokens"),
        "output_tokens": 1,
    }

    def event(kind: str, **data: Any) -> Event:
        return Event({"type": kind, **data}, kind)

    events = [
        event(
            "message_start",
            message={
                "id": "msg_wire",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        ),
        event("ping"),
    ]
    index = 0
    if text_pieces:
        events.append(
            event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        )
        events += [
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            for piece in text_pieces
        ]
        events.append(event("content_block_stop", index=0))
        index = 1
    for call in calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        events.append(event("content_block_start", index=index, content_block=block))
        events += [
            event(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": fragment},
            )
            for fragment in call.arguments
        ]
        events.append(event("content_block_stop", index=index))
        index += 1
    events.append(
        event("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage=final)
    )
    events.append(event("message_stop"))
    return _delayed(events, delay_s)


def anthropic_stream_error(message: str, *, kind: str = "overloaded_error") -> Event:
    """An error in the middle of an Anthropic stream: ``event: error`` with
    ``{"type": "error", "error": {"type": <kind>, "message": ...}}`` (Anthropic API reference,
    "Streaming Messages", error events)."""
    return Event(anthropic_error(message, kind=kind), "error")


# ---- server ----------------------------------------------------------------------------------


class _CutConnection(Exception):
    """Raised by a stream at a :class:`Cut`: uvicorn then closes the socket mid-body."""


class _QuietCuts(logging.Filter):
    """Keeps uvicorn from logging a scripted cut as an application error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _CutConnection)


logging.getLogger("uvicorn.error").addFilter(_QuietCuts())


class _EventStream(StreamingResponse):
    """A :class:`StreamingResponse` that knows whether the client left before its end.

    Starlette runs the body next to a listener for ``http.disconnect`` (ASGI spec 2.3, which
    uvicorn's h11 protocol reports) and cancels the body when it arrives; ``done`` is called
    once with True when that happened before the last event was sent.
    """

    def __init__(
        self,
        events: Sequence[Event | Cut],
        *,
        status: int,
        headers: Mapping[str, str],
        done: Callable[[bool], None],
    ) -> None:
        super().__init__(
            self._body(events),
            status_code=status,
            headers=dict(headers),
            media_type="text/event-stream",
        )
        self._done = done
        self._sent_all = False
        self._client_left = False

    async def _body(self, events: Sequence[Event | Cut]) -> AsyncIterator[bytes]:
        for item in events:
            if item.delay_s > 0:
                await asyncio.sleep(item.delay_s)
            if isinstance(item, Cut):
                raise _CutConnection
            yield item.encode()
        self._sent_all = True

    async def listen_for_disconnect(self, receive: Receive) -> None:
        await super().listen_for_disconnect(receive)
        self._client_left = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done(self._client_left and not self._sent_all)


class WireServer:
    """The server. ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[Reply]] = {
            OPENAI_PATH: collections.deque(),
            ANTHROPIC_PATH: collections.deque(),
            EMBEDDINGS_PATH: collections.deque(),
        }
        self._responders: dict[str, Responder] = {}
        self._hits: list[Hit] = []
        self._disconnects: list[Hit] = []
        self._in_flight = 0
        self.max_in_flight = 0
        """Most requests the server was handling at once."""
        # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
        # proto says TCP; with proto 0 every reply waits ~40 ms on the client's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route(OPENAI_PATH, self._handle, methods=["POST"]),
                Route(ANTHROPIC_PATH, self._handle, methods=["POST"]),
                Route(EMBEDDINGS_PATH, self._handle, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` takes (the SDK appends ``/chat/completions``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What ``AsyncAnthropic(base_url=...)`` takes (the SDK appends ``/v1/messages``)."""
        return self.url

    def start(self) -> WireServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("wire server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- scripting --

    def enqueue(self, path: str, *replies: Reply) -> None:
        """Answer the next requests on ``path`` with ``replies``, in order."""
        with self._lock:
            self._queues[path].extend(replies)

    def respond(self, path: str, responder: Responder | None) -> None:
        """Answer requests on ``path`` with ``responder`` once its queue is empty."""
        with self._lock:
            if responder is None:
                self._responders.pop(path, None)
            else:
                self._responders[path] = responder

    def hits(self, path: str | None = None) -> list[Hit]:
        """Requests received so far (on ``path``, or all), in arrival order."""
        with self._lock:
            return [h for h in self._hits if path is None or h.path == path]

    def disconnects(self, path: str | None = None) -> list[Hit]:
        """Streamed requests (on ``path``, or all) whose client went away before the last
        event was sent, in the order they went (a :class:`Cut` is not counted)."""
        with self._lock:
            return [h for h in self._disconnects if path is None or h.path == path]

    def wait_disconnects(self, count: int, *, timeout_s: float = 5.0) -> list[Hit]:
        """Block until :meth:`disconnects` holds ``count`` requests or ``timeout_s`` (s) pass
        (the server notices a closed socket a moment after the client closed it); returns
        :meth:`disconnects`. From async code: ``await asyncio.to_thread(...)``."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.disconnects()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    def pending(self, path: str) -> int:
        """Scripted replies not yet used on ``path``."""
        with self._lock:
            return len(self._queues[path])

    # -- serving --

    async def _handle(self, request: Request) -> Response:
        at = time.monotonic()
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        hit = Hit(request.url.path, at, dict(request.headers), body)
        with self._lock:
            self._hits.append(hit)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            queue = self._queues[hit.path]
            reply = queue.popleft() if queue else None
            responder = self._responders.get(hit.path)
        if reply is None:
            reply = (
                responder(hit)
                if responder is not None
                else Reply(418, {"error": {"message": "wire: nothing scripted", "type": "wire"}})
            )
        if reply.events is not None:
            return await self._stream(hit, reply)
        try:
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
        finally:
            self._leave()
        return Response(
            content=reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body),
            status_code=reply.status,
            headers=dict(reply.headers),
            media_type="application/json",
        )

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    async def _stream(self, hit: Hit, reply: Reply) -> Response:
        """A stream counts as in flight until its body ended (or the client left)."""

        def done(client_left: bool) -> None:
            with self._lock:
                self._in_flight -= 1
                if client_left:
                    self._disconnects.append(hit)

        try:
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
        except BaseException:
            self._leave()
            raise
        assert reply.events is not None
        return _EventStream(reply.events, status=reply.status, headers=reply.headers, done=done)


# ---- standalone: a fixed judge in its own process (bench/grading.py) ---------------------------


def judge_replies(delay_s: float) -> dict[str, Reply]:
    """A judge answering "Rating: [[8]]" on both paths after ``delay_s``, with the cached-prompt
    tokens (2006 prompt of which 1920 cached, 300 completion) in each provider's usage shape."""
    text = "Faithful and concise. Rating: [[8]]"
    return {
        OPENAI_PATH: Reply(
            body=openai_chat(text, usage=openai_usage(2006, 300, cached=1920)), delay_s=delay_s
        ),
        ANTHROPIC_PATH: Reply(
            body=anthropic_message(text, usage=anthropic_usage(86, 300, cache_read=1920)),
            delay_s=delay_s,
        ),
    }


def _constant(reply: Reply) -> Responder:
    def respond(_hit: Hit) -> Reply:
        return reply

    return respond


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.wire --latency-ms 200``: serve :func:`judge_replies` until stdin closes
    or the process is terminated; prints ``port <n>`` once listening."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="loopback OpenAI/Anthropic judge")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    replies = judge_replies(args.latency_ms / 1000)
    with WireServer() as server:
        for path, reply in replies.items():
            server.respond(path, _constant(reply))
        print(f"port {server.port}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or terminates us)


if __name__ == "__main__":
    main()
