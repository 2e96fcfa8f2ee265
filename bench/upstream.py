"""A loopback OpenAI Chat Completions upstream that answers at once, for ``bench/gateway.py``.

``python bench/upstream.py [--chunks 8] [--chunk-gap-ms 0]`` listens on 127.0.0.1 (a free
port), prints ``port <n>`` once listening, and serves ``POST /v1/chat/completions`` until its
stdin closes or it is terminated. It is a bare asyncio protocol (HTTP/1.1 keep-alive,
Content-Length or chunked request bodies), no framework, so that the floor every leg of the
benchmark shares costs as little CPU as possible on the same cores as the proxies under test.

Replies (OpenAI API reference, "The chat completion object" / "The chat completion chunk
object"): the request's ``model`` echoed, the fixed text :data:`TEXT` split into ``--chunks``
parts, ``usage`` 12 prompt + ``--chunks`` completion tokens. ``"stream": true`` gets an SSE
stream (``transfer-encoding: chunked``): a role chunk, one chunk per text part (the first part
at once, the others ``--chunk-gap-ms`` apart), a chunk with ``finish_reason`` ``stop``, a usage
chunk with ``choices: []`` when ``stream_options.include_usage`` is true, then ``data: [DONE]``.
Any other path answers 404, a body that is not JSON 400.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any

TEXT = "The quick brown fox jumps over the lazy dog, twice over, at loopback speed."
"""What every reply says (streamed: the concatenation of the chunks)."""

PATH = b"/v1/chat/completions"


def split_text(parts: int) -> list[str]:
    """:data:`TEXT` in ``parts`` non-empty pieces (word boundaries where possible)."""
    words = TEXT.split(" ")
    parts = max(1, min(parts, len(words)))
    size, extra = divmod(len(words), parts)
    pieces: list[str] = []
    at = 0
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        piece = " ".join(words[at : at + n])
        pieces.append(piece if i == 0 else " " + piece)
        at += n
    return pieces


def completion_body(model: str, parts: int) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": parts, "total_tokens": 12 + parts},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _event(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    payload = f"data: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(payload), payload)  # one HTTP chunk per SSE event


def stream_events(model: str, pieces: list[str], include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed reply, each already framed as one HTTP chunk."""
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**base, "choices": [choice]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, "stop"))
    if include_usage:
        n = len(pieces)
        usage = {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}
        events.append(_event({**base, "choices": [], "usage": usage}))
    events.append(_event("[DONE]"))
    return events


class Upstream(asyncio.Protocol):
    """One connection: parse requests off the buffer, answer each in turn."""

    def __init__(self, parts: int, gap_s: float) -> None:
        self.parts = parts
        self.pieces = split_text(parts)
        self.gap_s = gap_s
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a streamed reply with gaps is being written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while self.transport is not None and not self.busy:
            request = self._next_request()
            if request is None:
                return
            self._answer(*request)

    def _next_request(self) -> tuple[bytes, bytes, dict[bytes, bytes], bytes] | None:
        """(method, path, headers with lower-case names, body) of the next whole request."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).split(b"\r\n")
        method, path, _version = head[0].split(b" ", 2)
        headers: dict[bytes, bytes] = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = bytearray()
            at = start
            while True:
                eol = self.buffer.find(b"\r\n", at)
                if eol < 0:
                    return None
                size = int(bytes(self.buffer[at:eol]).split(b";")[0], 16)
                if len(self.buffer) < eol + 2 + size + 2:
                    return None
                body += self.buffer[eol + 2 : eol + 2 + size]
                at = eol + 2 + size + 2
                if size == 0:
                    break
            del self.buffer[:at]
            return method, path, headers, bytes(body)
        length = int(headers.get(b"content-length", b"0"))
        if len(self.buffer) < start + length:
            return None
        body_bytes = bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        return method, path, headers, body_bytes

    def _reply(self, status: bytes, content_type: bytes, body: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s"
            % (
                status,
                content_type,
                len(body),
                b"connection: close\r\n" if close else b"",
                body,
            )
        )
        if close:
            self.transport.close()

    def _answer(self, method: bytes, path: bytes, headers: dict[bytes, bytes], raw: bytes) -> None:
        close = headers.get(b"connection", b"").lower() == b"close"
        if method != b"POST" or path.split(b"?")[0] != PATH:
            self._reply(b"404 Not Found", b"application/json", b'{"error":"not found"}', close)
            return
        try:
            request = json.loads(raw)
            model = str(request.get("model", "bench"))
        except (ValueError, AttributeError):
            self._reply(b"400 Bad Request", b"application/json", b'{"error":"bad json"}', close)
            return
        if not request.get("stream"):
            body = completion_body(model, self.parts)
            self._reply(b"200 OK", b"application/json", body, close)
            return
        options = request.get("stream_options") or {}
        events = stream_events(model, self.pieces, bool(options.get("include_usage")))
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n%s\r\n" % (b"connection: close\r\n" if close else b"")
        )
        if self.gap_s <= 0:
            self.transport.write(b"".join(events) + b"0\r\n\r\n")
            if close:
                self.transport.close()
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._stream_slowly(events, close))

    async def _stream_slowly(self, events: list[bytes], close: bool) -> None:
        # role chunk and first text piece at once, then one piece per gap, then the rest.
        texts = len(self.pieces)
        for i, event in enumerate(events):
            if self.transport is None:
                return
            if 2 <= i <= texts:
                await asyncio.sleep(self.gap_s)
            if self.transport is None:
                return
            self.transport.write(event)
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        if close:
            self.transport.close()
            return
        self.busy = False
        self._drain()


async def serve(parts: int, gap_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(parts, gap_s), "127.0.0.1", 0, backlog=1024, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    # until the parent closes our stdin (or terminates us)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8, help="text pieces of a streamed reply")
    parser.add_argument(
        "--chunk-gap-ms", type=float, default=0.0, help="between streamed text pieces"
    )
    args = parser.parse_args()
    asyncio.run(serve(args.chunks, args.chunk_gap_ms / 1000))


if __name__ == "__main__":
    main()
