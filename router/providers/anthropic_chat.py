"""OpenAI Chat Completions <-> Anthropic Messages, as pure functions (no I/O).

The gateway speaks OpenAI's wire format (OpenAI API reference, "Chat Completions": "Create
chat completion", "The chat completion object", "The chat completion chunk object"); an
Anthropic upstream speaks Messages (Anthropic API reference, "Messages" and "Streaming
Messages"). Three pieces:

* :func:`to_anthropic`: a Chat Completions request body -> keyword arguments for
  ``anthropic.AsyncAnthropic().messages.create(**kwargs)`` (plus what the reply needs to know).
* :func:`to_openai`: an Anthropic ``Message`` (as a dict) -> a ``chat.completion`` dict.
* :class:`StreamTranslator`: Anthropic stream events (dicts), one at a time -> the
  ``chat.completion.chunk`` dicts to send for each.

Usage (Anthropic docs, "Prompt caching", tracking cache performance): Anthropic's
``input_tokens`` excludes the cached prompt, so OpenAI's ``prompt_tokens`` is
``input_tokens + cache_read_input_tokens + cache_creation_input_tokens`` and
``prompt_tokens_details.cached_tokens`` is ``cache_read_input_tokens``; ``completion_tokens`` is
``output_tokens`` (thinking included; ``output_tokens_details.thinking_tokens``, when reported,
becomes ``completion_tokens_details.reasoning_tokens``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.errors import InvalidInput
from router.providers.base import ProviderError

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when the request names neither ``max_completion_tokens`` nor
``max_tokens``: Anthropic requires one, OpenAI does not."""

DROPPED_PARAMS = frozenset(
    {
        # Sampling knobs: the API version anthropic SDK 2.x sends (anthropic-version
        # 2026-10-21, ``anthropic._constants.ANTHROPIC_API_VERSION``) refuses them and the SDK's
        # ``messages.create`` has no such arguments, so they cannot be honoured.
        "temperature",
        "top_p",
        "top_k",
        # OpenAI-only.
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "store",
        "metadata",
        "stream_options",
        "service_tier",
        "reasoning_effort",
        "verbosity",
        "prompt_cache_key",
        "safety_identifier",
        "prediction",
        "web_search_options",
        "modalities",
    }
)
"""Request keys :func:`to_anthropic` accepts and does not send (``stream`` is the caller's)."""

# Anthropic API reference, Messages: image source ``base64`` takes these media types.
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)

# Anthropic API reference, Messages "stop_reason" -> OpenAI ``finish_reason``.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic docs, "Errors": the error types worth trying again (500, 529, 429, 504).
_TRANSIENT_ERRORS = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}
)


@dataclass(frozen=True, slots=True)
class AnthropicRequest:
    """What :func:`to_anthropic` returns. ``kwargs`` go to ``messages.create(**kwargs)``
    (``stream`` not included); ``json_tool`` is the name of the forced tool that carries a
    ``response_format`` reply (None: no ``response_format``), for :func:`to_openai` and
    :class:`StreamTranslator`."""

    kwargs: dict[str, Any]
    json_tool: str | None = None


def finish_reason_of(stop_reason: str | None) -> str | None:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason``: ``end_turn``,
    ``stop_sequence`` and ``pause_turn`` -> ``stop``; ``max_tokens`` and
    ``model_context_window_exceeded`` -> ``length``; ``tool_use`` -> ``tool_calls``;
    ``refusal`` -> ``content_filter``; None -> None; anything newer -> ``stop``."""
    if stop_reason is None:
        return None
    return _FINISH.get(stop_reason, "stop")


def openai_usage_of(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An Anthropic ``usage`` object -> OpenAI's ``usage`` (counts in tokens; null counts are
    0): ``{"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details":
    {"cached_tokens"}}`` and, when Anthropic reports thinking tokens,
    ``"completion_tokens_details": {"reasoning_tokens"}``. None -> None."""
    if usage is None:
        return None

    def count(key: str) -> int:
        value = usage.get(key)
        return int(value) if isinstance(value, int | float) else 0

    cache_read = count("cache_read_input_tokens")
    prompt = count("input_tokens") + cache_read + count("cache_creation_input_tokens")
    completion = count("output_tokens")
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and isinstance(details.get("thinking_tokens"), int):
        out["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    return out


def stream_error_of(body: object) -> ProviderError:
    """The :class:`ProviderError` for an Anthropic stream ``error`` event's data
    (``{"type": "error", "error": {"type", "message"}}``): transient for ``overloaded_error``,
    ``api_error``, ``rate_limit_error`` and ``timeout_error``. ``upstream_status`` is None: the
    HTTP status was already 200."""
    error = body.get("error") if isinstance(body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    return ProviderError(
        f"anthropic: stream error {kind or 'unknown'}: {message or body}",
        transient=kind in _TRANSIENT_ERRORS,
    )


# ---- request ---------------------------------------------------------------------------------


def to_anthropic(body: Mapping[str, Any]) -> AnthropicRequest:
    """An OpenAI Chat Completions request body -> ``messages.create`` keyword arguments.

    ``kwargs`` holds ``model``, ``messages`` and ``max_tokens`` always, and ``system``,
    ``tools``, ``tool_choice``, ``stop_sequences``, ``metadata`` when the request implies them:

    * ``system`` / ``developer`` messages (wherever they are) -> ``system``, their texts joined
      by a blank line. ``user`` / ``assistant`` keep their role; consecutive messages of one
      role are merged into one turn (Anthropic wants turns to alternate).
    * Content parts: ``text`` -> text block; ``image_url`` with a ``data:<type>;base64,`` URL ->
      image block with a ``base64`` source (jpeg, png, gif, webp), an ``http(s)`` URL -> a
      ``url`` source; ``file`` with ``file_data`` (a PDF data URL) -> a ``document`` block.
    * Assistant ``tool_calls`` -> ``tool_use`` blocks after its text (``input`` is
      ``json.loads(function.arguments)``, which must be a JSON object); ``tool`` messages ->
      ``tool_result`` blocks (``tool_use_id`` = ``tool_call_id``) in a user turn, consecutive
      ones (and a user message right after them) in the same turn.
    * ``tools`` (``type: function``) -> ``{"name", "description", "input_schema"}``
      (``parameters``, default an empty object schema; ``strict`` kept); ``tool_choice``
      ``auto`` / ``none`` / ``required`` / ``{"type": "function", "function": {"name"}}`` ->
      ``{"type": "auto" | "none" | "any" | "tool"}``; ``parallel_tool_calls: false`` ->
      ``disable_parallel_tool_use: true`` on it (``auto`` when no choice was named).
    * ``max_completion_tokens`` (else ``max_tokens``, else :data:`DEFAULT_MAX_TOKENS`) ->
      ``max_tokens``; ``stop`` (a string or a list) -> ``stop_sequences``; ``user`` ->
      ``metadata.user_id``.
    * ``response_format`` ``json_schema`` -> one tool named after the schema
      (``input_schema`` = its ``schema``) forced with ``tool_choice: {"type": "tool"}``, as
      :func:`router.providers.anthropic.verdict_tool_of` does; ``json_object`` -> the same with
      the schema ``{"type": "object"}``, named ``json_object``; ``text`` -> nothing. The tool's
      name is :attr:`AnthropicRequest.json_tool`; the reply carries its input as the message
      content (a JSON string).
    * :data:`DROPPED_PARAMS` (``temperature``, ``top_p``, ``top_k``, ``seed``,
      ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``store``, ``metadata``,
      ``stream_options``, ...) and any key OpenAI may add later are not sent; ``stream`` is
      left to the caller.

    Raises:
        InvalidInput: the request cannot be sent to Anthropic; ``field`` names the part
            (``model``, ``messages``, ``messages[3].tool_calls[0].function.arguments``,
            ``messages[1].content[0].image_url.url``, ``tools[0].type``, ``tool_choice``,
            ``n`` (> 1), ``logprobs`` / ``top_logprobs``, ``audio``, ``functions``,
            ``response_format`` (with ``tools`` too, or an unknown type), ``stop``,
            ``max_tokens``).
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model is required", field="model")
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidInput("Anthropic returns one choice per call; n must be 1", field="n")
    if body.get("logprobs"):
        raise InvalidInput("Anthropic does not return log probabilities", field="logprobs")
    if body.get("top_logprobs") is not None:
        raise InvalidInput("Anthropic does not return log probabilities", field="top_logprobs")
    if body.get("audio") is not None:
        raise InvalidInput("Anthropic does not answer in audio", field="audio")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise InvalidInput(
            "the deprecated functions / function_call are not translated; use tools",
            field="functions" if body.get("functions") is not None else "function_call",
        )

    system, messages = _messages_of(body.get("messages"))
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": _max_tokens_of(body),
    }
    if system:
        kwargs["system"] = system

    tools = _tools_of(body.get("tools"))
    choice = _tool_choice_of(body.get("tool_choice"))
    json_tool: str | None = None
    forced = _json_tool_of(body.get("response_format"))
    if forced is not None:
        if tools:
            raise InvalidInput(
                "response_format cannot be combined with tools for Anthropic (it is sent as "
                "a forced tool)",
                field="response_format",
            )
        tool, json_tool = forced
        tools = [tool]
        choice = {"type": "tool", "name": json_tool}
    if body.get("parallel_tool_calls") is False and tools:
        choice = dict(choice) if choice is not None else {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if tools:
        kwargs["tools"] = tools
    if choice is not None:
        kwargs["tool_choice"] = choice

    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise InvalidInput("stop must be a string or a list of strings", field="stop")
    if stops:
        kwargs["stop_sequences"] = list(stops)
    user = body.get("user")
    if isinstance(user, str) and user:
        kwargs["metadata"] = {"user_id": user}
    return AnthropicRequest(kwargs=kwargs, json_tool=json_tool)


def _max_tokens_of(body: Mapping[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{key} must be an integer >= 1", field=key)
        return value
    return DEFAULT_MAX_TOKENS


def _text_parts(content: Any, where: str) -> str:
    """The text of system / developer content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise InvalidInput("only text parts are allowed here", field=f"{where}[{j}]")
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    raise InvalidInput("content must be a string or a list of parts", field=where)


def _messages_of(raw: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("messages must be a non-empty list", field="messages")
    systems: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]] | str) -> None:
        if turns and turns[-1]["role"] == role:
            last = turns[-1]
            if isinstance(last["content"], str):
                last["content"] = [{"type": "text", "text": last["content"]}]
            if isinstance(blocks, str):
                blocks = [{"type": "text", "text": blocks}]
            last["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidInput("a message must be an object", field=where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            systems.append(_text_parts(content, f"{where}.content"))
        elif role == "user":
            add("user", _user_content(content, f"{where}.content"))
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            if blocks:
                add("assistant", blocks)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidInput(
                    "a tool message needs tool_call_id", field=f"{where}.tool_call_id"
                )
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": _tool_result_content(content, f"{where}.content"),
            }
            add("user", [result])
        else:
            raise InvalidInput(
                "role must be system, developer, user, assistant or tool", field=f"{where}.role"
            )
    if not turns:
        raise InvalidInput("messages holds no user or assistant message", field="messages")
    return "\n\n".join(systems), turns


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidInput("content must be a string or a list of parts", field=where)
    return [_part_of(part, f"{where}[{j}]") for j, part in enumerate(content)]


def _part_of(part: Any, where: str) -> dict[str, Any]:
    """One user content part (OpenAI ``ChatCompletionContentPart``) -> a content block."""
    if not isinstance(part, Mapping):
        raise InvalidInput("a content part must be an object", field=where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidInput("a text part needs text", field=f"{where}.text")
        return {"type": "text", "text": text}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else None
        field = f"{where}.image_url.url"
        if not isinstance(url, str):
            raise InvalidInput("an image_url part needs image_url.url", field=field)
        if url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        match = _DATA_URL.match(url)
        if match is None:
            raise InvalidInput("image url must be http(s) or a base64 data: URL", field=field)
        media_type, data = match.groups()
        if media_type not in _IMAGE_TYPES:
            raise InvalidInput(
                f"image type {media_type} is not one Anthropic takes "
                f"({', '.join(sorted(_IMAGE_TYPES))})",
                field=field,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if kind == "file":
        file = part.get("file")
        data_url = file.get("file_data") if isinstance(file, Mapping) else None
        match = _DATA_URL.match(data_url) if isinstance(data_url, str) else None
        if match is None or match.group(1) != "application/pdf":
            raise InvalidInput(
                "only a PDF sent inline (file.file_data, a base64 data: URL) can be sent",
                field=f"{where}.file",
            )
        return {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": match.group(2)},
        }
    raise InvalidInput(
        f"content part type {kind!r} cannot be sent to Anthropic", field=f"{where}.type"
    )


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "refusal"):
                raise InvalidInput(
                    "assistant content parts must be text or refusal",
                    field=f"{where}.content[{j}]",
                )
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
    elif content is not None:
        raise InvalidInput(
            "content must be a string, a list of parts or null", field=f"{where}.content"
        )
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidInput("tool_calls must be a list", field=f"{where}.tool_calls")
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(call.get("id"), str):
            raise InvalidInput("a tool call needs id and function", field=at)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("a tool call needs function.name", field=f"{at}.function.name")
        arguments = function.get("arguments")
        try:
            tool_input = json.loads(arguments) if arguments not in (None, "") else {}
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"tool call arguments are not JSON: {exc}", field=f"{at}.function.arguments"
            ) from exc
        if not isinstance(tool_input, dict):
            raise InvalidInput(
                "tool call arguments must be a JSON object", field=f"{at}.function.arguments"
            )
        blocks.append({"type": "tool_use", "id": call["id"], "name": name, "input": tool_input})
    return blocks


def _tool_result_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return [_part_of(part, f"{where}[{j}]") for j, part in enumerate(content)]
    raise InvalidInput("content must be a string or a list of parts", field=where)


def _tools_of(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("tools must be a list", field="tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise InvalidInput(
                "only function tools can be sent to Anthropic", field=f"tools[{i}].type"
            )
        function = tool.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(name, str) or not name:
            raise InvalidInput("a tool needs function.name", field=f"tools[{i}].function.name")
        out: dict[str, Any] = {
            "name": name,
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(function.get("description"), str):
            out["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            out["strict"] = function["strict"]
        tools.append(out)
    return tools


def _tool_choice_of(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if raw in ("auto", "none"):
        return {"type": raw}
    if raw == "required":
        return {"type": "any"}
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise InvalidInput(
        'tool_choice must be "auto", "none", "required" or '
        '{"type": "function", "function": {"name": ...}}',
        field="tool_choice",
    )


def _json_tool_of(raw: Any) -> tuple[dict[str, Any], str] | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {
            "name": "json_object",
            "description": "Answer by calling this tool once with your reply as a JSON object.",
            "input_schema": {"type": "object"},
        }, "json_object"
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise InvalidInput(
                "response_format json_schema needs json_schema.schema",
                field="response_format.json_schema.schema",
            )
        given = spec.get("name")
        name = given if isinstance(given, str) and given else "response"
        description = spec.get("description")
        return {
            "name": name,
            "description": description
            if isinstance(description, str)
            else "Answer by calling this tool exactly once with your reply.",
            "input_schema": dict(spec["schema"]),
        }, name
    raise InvalidInput(
        "response_format type must be text, json_object or json_schema", field="response_format"
    )


# ---- reply -----------------------------------------------------------------------------------


def to_openai(
    message: Mapping[str, Any], *, json_tool: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic ``Message`` (``message.model_dump()``) -> an OpenAI ``chat.completion``.

    One choice: ``message.content`` is the ``text`` blocks joined (None when there are none),
    ``message.tool_calls`` the ``tool_use`` blocks as ``{"id", "type": "function",
    "function": {"name", "arguments": json.dumps(input)}}`` (absent when none), ``refusal``
    null; ``finish_reason`` from :func:`finish_reason_of`; ``usage`` from
    :func:`openai_usage_of`. With ``json_tool`` (:attr:`AnthropicRequest.json_tool`), that
    tool's ``input`` is the content instead (a JSON string) and the finish reason ``stop``.
    ``id`` and ``model`` are Anthropic's; ``created`` is Unix seconds (default: now).
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    answer: str | None = None
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            if json_tool is not None and block.get("name") == json_tool and answer is None:
                answer = arguments
                continue
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    finish = finish_reason_of(message.get("stop_reason")) or "stop"
    reply: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if answer is not None:
        reply["content"] = answer
        if finish == "tool_calls" and not calls:
            finish = "stop"
    elif texts:
        reply["content"] = "".join(texts)
    if calls:
        reply["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
    }
    usage = openai_usage_of(message.get("usage"))
    if usage is not None:
        body["usage"] = usage
    return body


def merge_usage(
    start: Mapping[str, Any] | None, delta: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Anthropic stream usage: ``message_start``'s ``message.usage`` overlaid with a
    ``message_delta``'s ``usage``. The delta's counts are cumulative (Anthropic API reference,
    "Streaming Messages": "the token counts shown in the usage field of the message_delta
    event are cumulative"), so each non-null one replaces the start's; nothing is summed."""
    if start is None and delta is None:
        return None
    merged = dict(start or {})
    merged.update({k: v for k, v in (delta or {}).items() if v is not None})
    return merged


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` dicts out.

    Feed each event (the ``data`` of one SSE event as a dict, e.g. an SDK
    ``RawMessageStreamEvent.model_dump()``) to :meth:`feed`; send what it returns, in order.
    Every chunk has ``id`` (Anthropic's message id), ``object``, ``created``, ``model`` and one
    choice at index 0, except the usage chunk. Events:

    * ``message_start`` -> ``delta: {"role": "assistant", "content": ""}``.
    * ``content_block_start`` of a ``tool_use`` -> ``delta.tool_calls: [{"index", "id",
      "type": "function", "function": {"name", "arguments": ""}}]``, ``index`` counting tool
      calls only (0, 1, ...) whatever the block's Anthropic index; ``text_delta`` ->
      ``delta.content``; ``input_json_delta`` -> ``delta.tool_calls: [{"index",
      "function": {"arguments": <partial_json>}}]`` for the block it belongs to. Thinking,
      citations and server-tool blocks are not sent.
    * ``message_delta`` -> ``delta: {}`` with ``finish_reason`` (:func:`finish_reason_of`),
      once: a stream may carry more than one ``message_delta`` (server tools), and a later one
      only updates usage. Each one's ``usage`` is laid over what is known
      (:func:`merge_usage`: cumulative counts replace, never add).
    * ``message_stop`` -> with ``include_usage``, ``choices: []`` and ``usage``
      (:func:`openai_usage_of` of :attr:`usage`).
    * ``ping`` and unknown event types -> nothing.

    With ``json_tool`` (:attr:`AnthropicRequest.json_tool`), that tool's ``partial_json``
    arrives as ``delta.content`` and a ``tool_use`` stop as ``finish_reason: "stop"``.

    Attributes: ``usage`` (Anthropic's native usage, merged; None before ``message_start``),
    ``model`` (None before it), ``finish_reason`` (None before ``message_delta``).

    Raises (from :meth:`feed`):
        ProviderError: an ``error`` event (:func:`stream_error_of`).
    """

    def __init__(
        self,
        *,
        json_tool: str | None = None,
        include_usage: bool = True,
        created: int | None = None,
    ) -> None:
        self.json_tool = json_tool
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self._id: str | None = None
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._json_blocks: set[int] = set()
        self._saw_tool_call = False

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks to send for one Anthropic stream event (often none or one)."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = message.get("id")
            self.model = message.get("model")
            start = message.get("usage")
            self.usage = dict(start) if isinstance(start, Mapping) else None
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            delta = event.get("delta") or {}
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                self.usage = merge_usage(self.usage, usage)
            finish = finish_reason_of(delta.get("stop_reason"))
            if finish == "tool_calls" and not self._saw_tool_call and self._json_blocks:
                finish = "stop"
            if finish is None or self.finish_reason is not None:
                return []  # one finish chunk per stream; a later delta only updates usage
            self.finish_reason = finish
            return [self._chunk({}, finish)]
        if kind == "message_stop":
            if not self.include_usage:
                return []
            last = self._chunk(None)
            last["usage"] = openai_usage_of(self.usage or {})
            return [last]
        if kind == "error":
            raise stream_error_of(event)
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") or {}
        index = event.get("index")
        if not isinstance(index, int):
            return []
        if block.get("type") == "text":
            text = block.get("text")
            return [self._chunk({"content": text})] if text else []
        if block.get("type") != "tool_use":
            return []
        if self.json_tool is not None and block.get("name") == self.json_tool:
            self._json_blocks.add(index)
            return []
        tool_index = len(self._tool_index)
        self._tool_index[index] = tool_index
        self._saw_tool_call = True
        call = {
            "index": tool_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") or {}
        index = event.get("index")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [self._chunk({"content": text})] if text else []
        if kind != "input_json_delta" or not isinstance(index, int):
            return []
        fragment = delta.get("partial_json")
        if not fragment:
            return []
        if index in self._json_blocks:
            return [self._chunk({"content": fragment})]
        tool_index = self._tool_index.get(index)
        if tool_index is None:
            return []
        return [
            self._chunk(
                {"tool_calls": [{"index": tool_index, "function": {"arguments": fragment}}]}
            )
        ]


def chunk_text(chunks: Sequence[Mapping[str, Any]]) -> str:
    """The ``delta.content`` of ``chunks`` joined (a test and logging aid)."""
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
