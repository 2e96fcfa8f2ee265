"""What a cache entry is keyed on, from one gateway request.

A request is cached under:

- ``key_hash``: SHA-256 of the whole normalised request (every message, the tools, and the
  parameters that change the answer, :data:`ANSWER_PARAMS`), within its scope: the exact
  match;
- ``scope``: SHA-256 of the tenant (``namespace``), task class, routed model, the class's
  routing-entry version and ``context_hash``, itself a SHA-256 of everything but the final
  user turn (system prompt, earlier turns, tools, response format, answer parameters). The
  semantic lookup embeds the final user turn and searches this scope only, so a multi-turn
  request never matches a cached single-turn one on its last turn alone, two tenants never
  share an entry, and an escalation (a new routing-entry version) retires the entries made
  before it.

A request the cache cannot key safely bypasses it, with a reason (:data:`BYPASS_REASONS`).
Normalisation: JSON with sorted keys, no whitespace; message text stripped of leading and
trailing whitespace with inner runs of whitespace collapsed to one space.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

ANSWER_PARAMS = (
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "modalities",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "reasoning_effort",
    "response_format",
    "seed",
    "stop",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "functions",
    "function_call",
)
"""Request parameters that change the answer (OpenAI API reference, "Create chat
completion"); every one is part of the keys. ``stream``, ``stream_options``, ``user``,
``metadata``, ``store`` and ``service_tier`` are not: they change the delivery, not the
answer."""

BYPASS_REASONS = (
    "class_off",
    "guard_off",
    "media",
    "tool_results",
    "n_above_1",
    "temperature",
    "no_user_turn",
    "shadow",
    "embedding_failed",
)
"""Why a request bypasses the cache: the class is ``cache = false``; the guard turned the
cache off for the class; an image, audio or file part in a message; a tool result or
assistant tool call in the conversation; ``n > 1``; a temperature above the class's
``cache_max_temperature``; the last message is not a user turn with text; a shadow-mode call
(the caller named its model); the embedder failed."""

_SPACE = re.compile(r"\s+")


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_text(text: str) -> str:
    """Text as keyed: whitespace runs collapsed to one space, ends stripped."""
    return _SPACE.sub(" ", text).strip()


def _text_of(content: Any) -> str | None:
    """The text of a message's content (a string, or a list of text parts); None when a part
    is not text (an image, audio, a file)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return normalise_text(content)
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            texts.append(str(part.get("text", "")))
        return normalise_text("\n".join(texts))
    return None


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The keys of one cacheable request: ``query`` (the final user turn, normalised: what is
    embedded), ``context_hash`` (everything else that changes the answer) and ``request_hash``
    (all of it); ``scope`` and ``key_hash`` add the tenant, class, model and route."""

    query: str
    context_hash: str
    request_hash: str
    scope: str
    key_hash: str


def cache_key(
    body: dict[str, Any],
    *,
    namespace: str,
    task_class: str,
    model: str,
    route_version: int,
    max_temperature: float | None,
) -> CacheKey | str:
    """The keys of ``body`` (an OpenAI Chat Completions request, already checked by
    :func:`router.gateway.parse_call`), or the bypass reason (one of :data:`BYPASS_REASONS`
    but the two class-level ones) when it cannot be keyed safely."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return "n_above_1"
    temperature = body.get("temperature")
    if (
        max_temperature is not None
        and isinstance(temperature, (int, float))
        and temperature > max_temperature
    ):
        return "temperature"
    messages = body.get("messages") or []
    normalised: list[dict[str, str]] = []
    for message in messages:
        role = str(message.get("role"))
        if role == "tool" or role == "function" or message.get("tool_calls"):
            return "tool_results"
        text = _text_of(message.get("content"))
        if text is None:
            return "media"
        entry = {"role": role, "content": text}
        if message.get("name"):
            entry["name"] = str(message["name"])
        normalised.append(entry)
    if not normalised or normalised[-1]["role"] != "user" or not normalised[-1]["content"]:
        return "no_user_turn"
    params = {k: body[k] for k in ANSWER_PARAMS if k in body}
    context_hash = _digest({"messages": normalised[:-1], "params": params})
    request_hash = _digest({"messages": normalised, "params": params})
    scope = _digest(["scope", namespace, task_class, model, route_version, context_hash])
    key_hash = _digest(["exact", scope, request_hash])
    return CacheKey(normalised[-1]["content"], context_hash, request_hash, scope, key_hash)
