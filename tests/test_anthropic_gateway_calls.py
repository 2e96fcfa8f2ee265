"""Gateway calls through ``AnthropicProvider`` (``chat_completion``, ``open_stream``) and the
real anthropic SDK against the loopback wire server: OpenAI shapes in and out, Anthropic on
the wire, errors before and during a stream, and a closed stream cancelling the upstream call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from router.errors import InvalidInput
from router.providers import AnthropicProvider, ProviderError
from router.providers.base import ChatStream
from tests.wire import (
    ANTHROPIC_PATH,
    Cut,
    Event,
    Reply,
    StreamedCall,
    WireServer,
    anthropic_message,
    anthropic_stream,
    anthropic_stream_error,
    anthropic_usage,
    error_reply,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def wire() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


@pytest.fixture
async def provider(wire: WireServer) -> AsyncIterator[AnthropicProvider]:
    made = AnthropicProvider(
        api_key=SecretStr("sk-wire-test"),
        base_url=wire.anthropic_base_url,
        max_retries=0,
        concurrency=2,
    )
    yield made
    await made.aclose()


def chat(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        **extra,
    }


async def drain(stream: ChatStream) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


async def test_a_non_streaming_call_with_tools(
    wire: WireServer, provider: AnthropicProvider
) -> None:
    reply = anthropic_message(
        "Checking.", stop_reason="tool_use", usage=anthropic_usage(90, 30, cache_read=10)
    )
    reply["content"].append(
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    )
    wire.enqueue(ANTHROPIC_PATH, Reply(body=reply))
    completion = await provider.chat_completion(
        chat(tools=[WEATHER], tool_choice="required", max_tokens=50, temperature=0.3)
    )
    (hit,) = wire.hits(ANTHROPIC_PATH)
    assert hit.body == {
        "model": "claude-x",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "tool_choice": {"type": "any"},
    }
    assert completion.body["object"] == "chat.completion"
    assert completion.body["model"] == "claude-3-5-sonnet"
    assert completion.body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]
    assert completion.body["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 30,
        "total_tokens": 130,
        "prompt_tokens_details": {"cached_tokens": 10},
    }
    assert completion.usage is not None
    assert {k: v for k, v in completion.usage.items() if v is not None} == {
        "input_tokens": 90,
        "output_tokens": 30,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 0,
    }


async def test_a_json_schema_reply(wire: WireServer, provider: AnthropicProvider) -> None:
    reply = anthropic_message(None, stop_reason="tool_use")
    reply["content"] = [
        {"type": "tool_use", "id": "toolu_1", "name": "grade", "input": {"score": 4}}
    ]
    wire.enqueue(ANTHROPIC_PATH, Reply(body=reply))
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "grade", "schema": schema}}
    completion = await provider.chat_completion(chat(response_format=fmt))
    assert wire.hits(ANTHROPIC_PATH)[0].body["tool_choice"] == {"type": "tool", "name": "grade"}
    choice = completion.body["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ('{"score": 4}', "stop")


async def test_invalid_input_sends_nothing(wire: WireServer, provider: AnthropicProvider) -> None:
    with pytest.raises(InvalidInput) as raised:
        await provider.chat_completion(chat(n=3))
    assert raised.value.field == "n"
    with pytest.raises(InvalidInput):
        await provider.open_stream(chat(logprobs=True))
    assert wire.hits() == []


async def test_an_http_error_carries_status_and_retry_hint(
    wire: WireServer, provider: AnthropicProvider
) -> None:
    wire.enqueue(ANTHROPIC_PATH, error_reply(ANTHROPIC_PATH, 429, headers={"retry-after": "7"}))
    with pytest.raises(ProviderError) as raised:
        await provider.chat_completion(chat())
    assert (raised.value.upstream_status, raised.value.retry_after_s, raised.value.transient) == (
        429,
        7.0,
        True,
    )
    wire.enqueue(ANTHROPIC_PATH, error_reply(ANTHROPIC_PATH, 400))
    with pytest.raises(ProviderError) as raised:
        await provider.chat_completion(chat())
    assert (raised.value.upstream_status, raised.value.retry_after_s, raised.value.transient) == (
        400,
        None,
        False,
    )


async def test_a_streamed_text_reply(wire: WireServer, provider: AnthropicProvider) -> None:
    usage = anthropic_usage(100, 40, cache_read=1920, cache_write=8)
    wire.enqueue(ANTHROPIC_PATH, Reply(events=anthropic_stream(["Hel", "lo"], usage=usage)))
    stream = await provider.open_stream(chat(stream=True, stream_options={"include_usage": True}))
    chunks = await drain(stream)
    (hit,) = wire.hits(ANTHROPIC_PATH)
    assert hit.body["stream"] is True and "stream_options" not in hit.body
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_wire" for c in chunks)
    assert [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks[:-1]] == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({}, "stop"),
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 2028,
        "completion_tokens": 40,
        "total_tokens": 2068,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }
    assert stream.model == "claude-3-5-sonnet"
    assert stream.usage is not None
    assert {k: v for k, v in stream.usage.items() if v is not None} == {
        "input_tokens": 100,
        "cache_read_input_tokens": 1920,
        "cache_creation_input_tokens": 8,
        "output_tokens": 40,
    }
    assert wire.disconnects() == []


async def test_streamed_tool_calls(wire: WireServer, provider: AnthropicProvider) -> None:
    calls = [
        StreamedCall("toolu_a", "get_weather", ['{"city"', ': "Paris"}']),
        StreamedCall("toolu_b", "get_weather", ['{"city": "Ro', 'me"}']),
    ]
    wire.enqueue(ANTHROPIC_PATH, Reply(events=anthropic_stream(["Two calls."], tool_uses=calls)))
    chunks = await drain(
        await provider.open_stream(chat(tools=[WEATHER], parallel_tool_calls=True))
    )
    heads: list[tuple[int, str, str]] = []
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []) if chunk["choices"] else []:
            if "id" in call:
                heads.append((call["index"], call["id"], call["function"]["name"]))
            arguments[call["index"]] = (
                arguments.get(call["index"], "") + call["function"]["arguments"]
            )
    assert heads == [(0, "toolu_a", "get_weather"), (1, "toolu_b", "get_weather")]
    assert {i: json.loads(a) for i, a in arguments.items()} == {
        0: {"city": "Paris"},
        1: {"city": "Rome"},
    }
    finishes = [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["tool_calls"]


async def test_an_overloaded_error_mid_stream(
    wire: WireServer, provider: AnthropicProvider
) -> None:
    events = anthropic_stream(["a", "b", "c"])
    wire.enqueue(ANTHROPIC_PATH, Reply(events=[*events[:4], anthropic_stream_error("Overloaded")]))
    stream = await provider.open_stream(chat())
    got: list[dict[str, Any]] = []
    with pytest.raises(ProviderError) as raised:
        async for chunk in stream:
            got.append(chunk)
    assert [c["choices"][0]["delta"] for c in got] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
    ]
    assert raised.value.transient is True
    assert raised.value.upstream_status is None
    assert "overloaded_error" in raised.value.message


async def test_a_cut_connection_mid_stream(wire: WireServer, provider: AnthropicProvider) -> None:
    events = anthropic_stream(["a", "b"])
    wire.enqueue(ANTHROPIC_PATH, Reply(events=[*events[:4], Cut()]))
    stream = await provider.open_stream(chat())
    with pytest.raises(ProviderError) as raised:
        await drain(stream)
    assert raised.value.transient is True


async def test_a_stream_that_ends_early(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(ANTHROPIC_PATH, Reply(events=anthropic_stream(["a"])[:-1]))  # no message_stop
    with pytest.raises(ProviderError, match="before message_stop") as raised:
        await drain(await provider.open_stream(chat()))
    assert raised.value.transient is True


async def test_a_429_before_the_stream_raises_from_open_stream(
    wire: WireServer, provider: AnthropicProvider
) -> None:
    wire.enqueue(
        ANTHROPIC_PATH, error_reply(ANTHROPIC_PATH, 429, headers={"retry-after-ms": "2500"})
    )
    with pytest.raises(ProviderError) as raised:
        await provider.open_stream(chat())
    assert (raised.value.upstream_status, raised.value.retry_after_s, raised.value.transient) == (
        429,
        2.5,
        True,
    )
    # The place it took is free again: two more streams open on a provider of concurrency 2.
    wire.enqueue(
        ANTHROPIC_PATH, Reply(events=anthropic_stream(["x"])), Reply(events=anthropic_stream(["y"]))
    )
    first = await provider.open_stream(chat())
    second = await asyncio.wait_for(provider.open_stream(chat()), 5)
    assert len(await drain(first)) == len(await drain(second))


async def test_closing_a_stream_cancels_the_upstream_call(
    wire: WireServer, provider: AnthropicProvider
) -> None:
    pieces = [f"w{i} " for i in range(50)]
    events = anthropic_stream(pieces)
    slow = [*events[:4], *(Event(e.data, e.event, delay_s=0.1) for e in events[4:])]
    wire.enqueue(ANTHROPIC_PATH, Reply(events=slow))
    stream = await provider.open_stream(chat())
    got = [await stream.__anext__() for _ in range(3)]
    assert [c["choices"][0]["delta"] for c in got] == [
        {"role": "assistant", "content": ""},
        {"content": "w0 "},
        {"content": "w1 "},
    ]
    await stream.aclose()
    gone = await asyncio.to_thread(wire.wait_disconnects, 1)
    assert [h.path for h in gone] == [ANTHROPIC_PATH]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    await stream.aclose()  # idempotent
    # Both places are free: two streams open at once.
    wire.enqueue(
        ANTHROPIC_PATH, Reply(events=anthropic_stream(["x"])), Reply(events=anthropic_stream(["y"]))
    )
    streams = [await asyncio.wait_for(provider.open_stream(chat()), 5) for _ in range(2)]
    for s in streams:
        await s.aclose()


async def test_an_open_stream_holds_a_place(wire: WireServer) -> None:
    provider = AnthropicProvider(
        api_key=SecretStr("k"), base_url=wire.anthropic_base_url, max_retries=0, concurrency=1
    )
    try:
        wire.enqueue(
            ANTHROPIC_PATH,
            Reply(events=anthropic_stream(["x"])),
            Reply(events=anthropic_stream(["y"])),
        )
        first = await provider.open_stream(chat())
        second = asyncio.ensure_future(provider.open_stream(chat()))
        await asyncio.sleep(0.2)
        assert not second.done() and len(wire.hits(ANTHROPIC_PATH)) == 1
        await drain(first)  # reading to the end frees the place
        await drain(await asyncio.wait_for(second, 5))
    finally:
        await provider.aclose()
