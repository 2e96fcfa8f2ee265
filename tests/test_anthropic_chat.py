"""OpenAI Chat Completions <-> Anthropic Messages translation (router.providers.anthropic_chat).

Pure functions: requests in, ``messages.create`` kwargs out; Anthropic messages and stream
events in, OpenAI ``chat.completion`` / ``chat.completion.chunk`` dicts out. Exact values.
"""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import InvalidInput
from router.providers.anthropic_chat import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    chunk_text,
    finish_reason_of,
    merge_usage,
    openai_usage_of,
    to_anthropic,
    to_openai,
)
from router.providers.base import ProviderError
from tests.wire import StreamedCall, anthropic_stream, anthropic_usage

USER = {"role": "user", "content": "hi"}


def kwargs_of(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "claude-x")
    body.setdefault("messages", [USER])
    return to_anthropic(body).kwargs


# ---- requests --------------------------------------------------------------------------------


def test_minimal_request_gets_the_default_max_tokens() -> None:
    assert kwargs_of() == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert DEFAULT_MAX_TOKENS == 4096


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert kwargs_of(max_tokens=10)["max_tokens"] == 10
    assert kwargs_of(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(max_tokens=0)
    assert raised.value.field == "max_tokens"


def test_system_and_developer_messages_are_hoisted_and_joined() -> None:
    kwargs = kwargs_of(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            USER,
        ]
    )
    assert kwargs["system"] == "Be brief.\n\nUse French."
    assert kwargs["messages"] == [{"role": "user", "content": "hi"}]


def test_a_tool_round_trip() -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "thanks"},
    ]
    assert kwargs_of(messages=messages)["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]


def test_an_assistant_message_with_only_tool_calls_and_null_content() -> None:
    messages = [
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]
    assert kwargs_of(messages=messages)["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {}}],
    }


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_unreadable_tool_arguments_name_the_field(arguments: str) -> None:
    messages = [
        {"role": "system", "content": "s"},
        USER,
        {"role": "assistant", "content": "ok"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
            ],
        },
    ]
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(messages=messages)
    assert raised.value.field == "messages[3].tool_calls[0].function.arguments"


def test_images_and_text_parts() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    assert kwargs_of(messages=[{"role": "user", "content": content}])["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    "url", ["data:image/bmp;base64,AAAA", "ftp://example.com/x.png", "data:image/png,raw"]
)
def test_images_anthropic_cannot_take(url: str) -> None:
    content = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(
            messages=[
                USER,
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": content},
            ]
        )
    assert raised.value.field == "messages[2].content[1].image_url.url"


def test_inline_pdf_becomes_a_document_block() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    blocks = kwargs_of(messages=[{"role": "user", "content": [part]}])["messages"][0]["content"]
    assert blocks == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        }
    ]


def test_tools_and_tool_choice() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    kwargs = kwargs_of(tools=tools)
    assert kwargs["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in kwargs
    choices = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for openai_choice, anthropic_choice in choices.items():
        assert kwargs_of(tools=tools, tool_choice=openai_choice)["tool_choice"] == anthropic_choice
    named = {"type": "function", "function": {"name": "now"}}
    assert kwargs_of(tools=tools, tool_choice=named)["tool_choice"] == {
        "type": "tool",
        "name": "now",
    }
    assert kwargs_of(tools=tools, parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert kwargs_of(tools=tools, tool_choice="required", parallel_tool_calls=False)[
        "tool_choice"
    ] == {"type": "any", "disable_parallel_tool_use": True}
    assert kwargs_of(tools=tools, tool_choice="none", parallel_tool_calls=False)["tool_choice"] == {
        "type": "none"
    }
    assert "tool_choice" not in kwargs_of(tools=tools, parallel_tool_calls=True)
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(tools=tools, tool_choice="sometimes")
    assert raised.value.field == "tool_choice"
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(tools=[tools[0], {"type": "custom", "custom": {"name": "x"}}])
    assert raised.value.field == "tools[1].type"


def test_stop_user_and_dropped_params() -> None:
    assert kwargs_of(stop="END")["stop_sequences"] == ["END"]
    assert kwargs_of(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in kwargs_of(stop=None)
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(stop=[1])
    assert raised.value.field == "stop"
    assert kwargs_of(user="u-42")["metadata"] == {"user_id": "u-42"}
    dropped = kwargs_of(
        temperature=0.2,
        top_p=0.9,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.1,
        logit_bias={"1": 2},
        store=True,
        metadata={"k": "v"},
        stream=True,
        stream_options={"include_usage": True},
        n=1,
        logprobs=False,
    )
    assert dropped == kwargs_of()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
        ({"messages": [USER, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_what_anthropic_cannot_do_is_refused(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        kwargs_of(**extra)
    assert raised.value.field == field


def test_response_format_json_schema_is_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    request = to_anthropic(
        {
            "model": "claude-x",
            "messages": [USER],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "grade", "schema": schema, "strict": True},
            },
        }
    )
    assert request.json_tool == "grade"
    assert request.kwargs["tools"] == [
        {
            "name": "grade",
            "description": "Answer by calling this tool exactly once with your reply.",
            "input_schema": schema,
        }
    ]
    assert request.kwargs["tool_choice"] == {"type": "tool", "name": "grade"}
    plain = to_anthropic({"model": "m", "messages": [USER], "response_format": {"type": "text"}})
    assert plain.json_tool is None and "tools" not in plain.kwargs
    obj = to_anthropic(
        {"model": "m", "messages": [USER], "response_format": {"type": "json_object"}}
    )
    assert obj.json_tool == "json_object"
    assert obj.kwargs["tools"][0]["input_schema"] == {"type": "object"}
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(InvalidInput) as raised:
        to_anthropic(
            {
                "model": "m",
                "messages": [USER],
                "tools": tools,
                "response_format": {"type": "json_object"},
            }
        )
    assert raised.value.field == "response_format"


# ---- replies ---------------------------------------------------------------------------------


def test_finish_reasons() -> None:
    assert {
        r: finish_reason_of(r)
        for r in (
            "end_turn",
            "stop_sequence",
            "max_tokens",
            "model_context_window_exceeded",
            "tool_use",
            "refusal",
            "pause_turn",
        )
    } == {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
        "pause_turn": "stop",
    }
    assert finish_reason_of(None) is None


def test_usage_counts_the_cached_prompt() -> None:
    usage = anthropic_usage(100, 40, cache_read=1920, cache_write=8, thinking=12)
    assert openai_usage_of(usage) == {
        "prompt_tokens": 2028,
        "completion_tokens": 40,
        "total_tokens": 2068,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    assert openai_usage_of(
        {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": None}
    ) == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert openai_usage_of(None) is None


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x-20260101",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(10, 5, cache_read=20),
    }


def test_a_text_reply() -> None:
    body = to_openai(
        message([{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}]), created=7
    )
    assert body == {
        "id": "msg_1",
        "object": "chat.completion",
        "created": 7,
        "model": "claude-x-20260101",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 5,
            "total_tokens": 35,
            "prompt_tokens_details": {"cached_tokens": 20},
        },
    }


def test_a_tool_call_reply() -> None:
    content = [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]
    choice = to_openai(message(content, "tool_use"), created=7)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ],
    }


def test_a_json_tool_reply_is_content() -> None:
    content = [{"type": "tool_use", "id": "toolu_1", "name": "grade", "input": {"score": 4}}]
    choice = to_openai(message(content, "tool_use"), json_tool="grade", created=7)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": '{"score": 4}', "refusal": None}


def test_refusal_and_truncation() -> None:
    assert to_openai(message([], "refusal"))["choices"][0]["finish_reason"] == "content_filter"
    assert to_openai(message([], "refusal"))["choices"][0]["message"]["content"] is None
    cut = to_openai(message([{"type": "text", "text": "abc"}], "max_tokens"))
    assert cut["choices"][0]["finish_reason"] == "length"


# ---- streams ---------------------------------------------------------------------------------


def feed_all(translator: StreamTranslator, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk for event in events for chunk in translator.feed(event)]


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [
        (c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]
    ]


def test_a_streamed_text_reply() -> None:
    events = [e.data for e in anthropic_stream(["Hel", "lo"], usage=anthropic_usage(100, 40))]
    translator = StreamTranslator(created=7)
    chunks = feed_all(translator, events)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({}, "stop"),
    ]
    assert chunks[0] == {
        "id": "msg_wire",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "claude-3-5-sonnet",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert chunks[-1] == {
        "id": "msg_wire",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "claude-3-5-sonnet",
        "choices": [],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    assert translator.model == "claude-3-5-sonnet"
    assert translator.finish_reason == "stop"
    assert chunk_text(chunks) == "Hello"


def test_no_usage_chunk_unless_asked() -> None:
    events = [e.data for e in anthropic_stream(["x"])]
    chunks = feed_all(StreamTranslator(include_usage=False), events)
    assert all(c["choices"] for c in chunks)


def test_two_streamed_tool_calls_with_interleaved_fragments() -> None:
    """A text block (Anthropic index 0), then two tool_use blocks (1, 2) whose input_json_delta
    events interleave; OpenAI tool indexes count tool calls only (0, 1)."""

    def ev(kind: str, **data: Any) -> dict[str, Any]:
        return {"type": kind, **data}

    def frag(index: int, text: str) -> dict[str, Any]:
        return ev(
            "content_block_delta",
            index=index,
            delta={"type": "input_json_delta", "partial_json": text},
        )

    start_usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 1920,
        "cache_creation_input_tokens": 0,
        "output_tokens": 1,
    }
    events = [
        ev(
            "message_start",
            message={"id": "msg_t", "model": "claude-x", "content": [], "usage": start_usage},
        ),
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ev("ping"),
        ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Let me check."}),
        ev("content_block_stop", index=0),
        ev(
            "content_block_start",
            index=1,
            content_block={"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}},
        ),
        frag(1, ""),
        frag(1, '{"ci'),
        ev(
            "content_block_start",
            index=2,
            content_block={"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
        ),
        frag(2, '{"tz": '),
        frag(1, 'ty": "Paris"}'),
        frag(2, '"CET"}'),
        ev("content_block_stop", index=1),
        ev("content_block_stop", index=2),
        ev("message_delta", delta={"stop_reason": None}, usage={"output_tokens": 5}),
        ev(
            "message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage={"output_tokens": 40},
        ),
        ev("message_stop"),
    ]
    translator = StreamTranslator(created=7)
    chunks = feed_all(translator, events)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Let me check."}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz": '}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}, None),
        ({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]}, None),
        ({}, "tool_calls"),
    ]
    # Usage once: the start's input and cache counts, the LAST cumulative output count.
    assert translator.usage == {
        "input_tokens": 100,
        "cache_read_input_tokens": 1920,
        "cache_creation_input_tokens": 0,
        "output_tokens": 40,
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 2020,
        "completion_tokens": 40,
        "total_tokens": 2060,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }


def test_a_stream_from_the_wire_helper_with_tool_uses() -> None:
    calls = [StreamedCall("toolu_a", "f", ['{"a":', " 1}"]), StreamedCall("toolu_b", "g", ["{}"])]
    events = [e.data for e in anthropic_stream([], tool_uses=calls)]
    chunks = feed_all(StreamTranslator(), events)
    heads = [
        d["tool_calls"][0]
        for d, _ in deltas(chunks)
        if "tool_calls" in d and "id" in d["tool_calls"][0]
    ]
    assert [(h["index"], h["id"], h["function"]["name"]) for h in heads] == [
        (0, "toolu_a", "f"),
        (1, "toolu_b", "g"),
    ]
    args: dict[int, str] = {}
    for d, _ in deltas(chunks):
        for call in d.get("tool_calls", []):
            args[call["index"]] = args.get(call["index"], "") + call["function"]["arguments"]
    assert args == {0: '{"a": 1}', 1: "{}"}


def test_a_streamed_json_tool_is_content() -> None:
    calls = [StreamedCall("toolu_a", "grade", ['{"score"', ": 4}"])]
    events = [e.data for e in anthropic_stream([], tool_uses=calls)]
    chunks = feed_all(StreamTranslator(json_tool="grade"), events)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": '{"score"'}, None),
        ({"content": ": 4}"}, None),
        ({}, "stop"),
    ]


def test_merge_usage_replaces_never_adds() -> None:
    start = {"input_tokens": 100, "cache_read_input_tokens": 1920, "output_tokens": 1}
    assert merge_usage(start, {"output_tokens": 5, "input_tokens": None}) == {
        "input_tokens": 100,
        "cache_read_input_tokens": 1920,
        "output_tokens": 5,
    }
    assert merge_usage(None, None) is None


@pytest.mark.parametrize(
    ("kind", "transient"),
    [
        ("overloaded_error", True),
        ("api_error", True),
        ("rate_limit_error", True),
        ("invalid_request_error", False),
    ],
)
def test_an_error_event_raises(kind: str, transient: bool) -> None:
    translator = StreamTranslator()
    translator.feed({"type": "message_start", "message": {"id": "m", "model": "x", "usage": None}})
    with pytest.raises(ProviderError) as raised:
        translator.feed({"type": "error", "error": {"type": kind, "message": "busy"}})
    assert raised.value.transient is transient
    assert raised.value.upstream_status is None
    assert kind in raised.value.message and "busy" in raised.value.message
