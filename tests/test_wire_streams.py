"""The wire server's streams: Server-Sent Events as each SDK reads them, cuts, disconnects.

The event lists come from :func:`tests.wire.openai_stream` / :func:`tests.wire.anthropic_stream`;
reading them through the official SDKs checks they are what the SDKs expect of the real APIs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.wire import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Cut,
    Event,
    Reply,
    StreamedCall,
    WireServer,
    anthropic_stream,
    anthropic_stream_error,
    anthropic_usage,
    openai_stream,
    openai_stream_error,
    openai_usage,
)

KEY = "sk-wire-test"


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


def test_event_encoding() -> None:
    assert Event({"a": 1}).encode() == b'data: {"a": 1}\n\n'
    assert Event("[DONE]").encode() == b"data: [DONE]\n\n"
    assert Event({"type": "ping"}, "ping").encode() == b'event: ping\ndata: {"type": "ping"}\n\n'


async def test_events_arrive_one_by_one(wire: WireServer) -> None:
    events = [Event({"n": 0}), Event({"n": 1}, delay_s=0.3), Event({"n": 2}, delay_s=0.3)]
    wire.enqueue(OPENAI_PATH, Reply(events=events, headers={"x-wire": "1"}))
    seen: list[tuple[float, bytes]] = []
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", wire.url + OPENAI_PATH, json={}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-wire"] == "1"
        async for line in response.aiter_lines():
            if line:
                seen.append((time.monotonic(), line.encode()))
    assert [line for _, line in seen] == [b'data: {"n": 0}', b'data: {"n": 1}', b'data: {"n": 2}']
    assert seen[1][0] - seen[0][0] > 0.2 and seen[2][0] - seen[1][0] > 0.2
    assert wire.disconnects() == []


async def test_openai_stream_through_the_sdk(wire: WireServer) -> None:
    calls = [
        StreamedCall("call_a", "get_weather", ['{"city"', ': "Paris"}']),
        StreamedCall("call_b", "get_time", ["{}"]),
    ]
    usage = openai_usage(50, 12, cached=32)
    wire.enqueue(
        OPENAI_PATH, Reply(events=openai_stream(["Hel", "lo"], tool_calls=calls, usage=usage))
    )
    client = openai.AsyncOpenAI(api_key=KEY, base_url=wire.openai_base_url, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    finally:
        await client.close()
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    heads = [(d.index, d.id, d.type, d.function.name) for d in deltas if d.id and d.function]
    assert heads == [
        (0, "call_a", "function", "get_weather"),
        (1, "call_b", "function", "get_time"),
    ]
    args = {
        i: "".join(d.function.arguments or "" for d in deltas if d.index == i and d.function)
        for i in (0, 1)
    }
    assert args == {0: '{"city": "Paris"}', 1: "{}"}
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 50,
        "completion_tokens": 12,
        "total_tokens": 62,
        "prompt_tokens_details": {"cached_tokens": 32},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_openai_stream_without_usage(wire: WireServer) -> None:
    events = openai_stream(["x"], include_usage=False)
    assert all("usage" not in e.data for e in events[:-1])
    assert [e.data["choices"][0]["finish_reason"] for e in events[:-1]] == [None, None, "stop"]
    assert events[-1].data == "[DONE]"


async def test_openai_error_mid_stream(wire: WireServer) -> None:
    events = openai_stream(["a", "b"])
    wire.enqueue(OPENAI_PATH, Reply(events=[*events[:2], openai_stream_error("boom")]))
    client = openai.AsyncOpenAI(api_key=KEY, base_url=wire.openai_base_url, max_retries=0)
    got: list[Any] = []
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="boom"):
            async for chunk in stream:
                got.append(chunk)
    finally:
        await client.close()
    assert len(got) == 2


async def test_anthropic_stream_through_the_sdk(wire: WireServer) -> None:
    calls = [StreamedCall("toolu_a", "get_weather", ['{"ci', 'ty": "Paris"}'])]
    usage = anthropic_usage(100, 40, cache_read=1920, cache_write=8)
    wire.enqueue(
        ANTHROPIC_PATH,
        Reply(events=anthropic_stream(["Hi", " there"], tool_uses=calls, usage=usage)),
    )
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=wire.anthropic_base_url, max_retries=0)
    try:
        stream = await client.messages.create(
            model="claude-3-5-sonnet",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        events = [event async for event in stream]
    finally:
        await client.close()
    types = [e.type for e in events]
    assert types == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"]
        * 2,
        "message_delta",
        "message_stop",
    ]  # the SDK drops ping
    start = events[0]
    assert start.type == "message_start"
    assert start.message.usage.model_dump(exclude_none=True) == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 8,
        "cache_read_input_tokens": 1920,
        "output_tokens": 1,
    }
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "tool_use"
    assert delta.usage.output_tokens == 40
    block = events[5]
    assert block.type == "content_block_start" and block.index == 1
    assert block.content_block.model_dump(exclude_none=True) == {
        "type": "tool_use",
        "id": "toolu_a",
        "name": "get_weather",
        "input": {},
    }


async def test_anthropic_error_mid_stream(wire: WireServer) -> None:
    events = anthropic_stream(["a", "b"])
    wire.enqueue(ANTHROPIC_PATH, Reply(events=[*events[:4], anthropic_stream_error("busy")]))
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=wire.anthropic_base_url, max_retries=0)
    got: list[Any] = []
    try:
        stream = await client.messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(anthropic.APIStatusError) as raised:
            async for event in stream:
                got.append(event)
    finally:
        await client.close()
    assert [e.type for e in got] == ["message_start", "content_block_start", "content_block_delta"]
    # The HTTP status was 200; what failed is in the body.
    assert raised.value.status_code == 200
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }


async def test_cut_truncates_the_body(wire: WireServer) -> None:
    wire.enqueue(OPENAI_PATH, Reply(events=[Event({"n": 0}), Cut(delay_s=0.05), Event({"n": 1})]))
    lines: list[str] = []
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", wire.url + OPENAI_PATH, json={}) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
    assert lines[0] == 'data: {"n": 0}'
    assert wire.disconnects() == []  # the server cut it; the client did not leave


async def test_client_leaving_mid_stream_is_recorded(wire: WireServer) -> None:
    events = [Event({"n": 0}), *[Event({"n": i}, delay_s=0.2) for i in range(1, 20)]]
    wire.enqueue(ANTHROPIC_PATH, Reply(events=events))
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", wire.url + ANTHROPIC_PATH, json={"x": 1}) as response,
    ):
        async for _line in response.aiter_lines():
            break
    gone = await asyncio.to_thread(wire.wait_disconnects, 1)
    assert [h.body for h in gone] == [{"x": 1}]
    assert wire.disconnects(OPENAI_PATH) == []
    assert wire.max_in_flight == 1


async def test_a_stream_read_to_its_end_is_no_disconnect(wire: WireServer) -> None:
    wire.enqueue(ANTHROPIC_PATH, Reply(events=anthropic_stream(["ok"], delay_s=0.01)))
    async with httpx.AsyncClient() as client:
        response = await client.post(wire.url + ANTHROPIC_PATH, json={})
    assert response.text.count("event: ") == 7
    await asyncio.sleep(0.1)
    assert wire.disconnects() == []
