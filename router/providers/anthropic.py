"""Anthropic Messages adapter on the official SDK (``anthropic.AsyncAnthropic``).

Retries are the SDK's own: it retries connection errors, timeouts, 408, 409, 429 and 5xx
(529 "overloaded" included) up to ``max_retries`` times, sleeping the ``retry-after-ms`` /
``retry-after`` the server asks for, however long, else an exponential backoff from 0.5 s capped
at 8 s (anthropic-sdk-python ``_base_client.py``: ``_should_retry``,
``_calculate_retry_timeout``). There is no retry loop here. The wait budget for retry hints is
SDK middleware (Anthropic docs, "SDK middleware"): the chain runs once per HTTP attempt inside
the SDK's retry loop and sees every response, 4xx/5xx included, before the SDK sleeps; an
exception a middleware raises that is not one of the SDK's retryable types propagates to the
caller as is (``_should_retry_exception``). So :meth:`WaitBudget.check` raising
:class:`Deferred` there ends the call without a sleep. An httpx response hook would not do
here: this SDK wraps foreign exceptions from sending in ``APIConnectionError`` and retries them.

Gateway calls (:meth:`AnthropicProvider.chat_completion`, :meth:`AnthropicProvider.open_stream`)
take and return OpenAI Chat Completions shapes; the translation is
:mod:`router.providers.anthropic_chat` (pure functions). An ``error`` event inside a stream
comes out of the SDK as an ``APIStatusError`` whose ``status_code`` is the stream's 200; a
dropped or stalled connection mid-stream comes out as a raw ``httpx2`` transport error (the
SDK wraps only errors from sending, not from reading a stream's body).
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import anthropic
import httpx2
from anthropic.types import Message, TextBlock, ToolUseBlock
from pydantic import SecretStr

from router.errors import InvalidInput
from router.pricing import normalize_usage
from router.providers.anthropic_chat import (
    StreamTranslator,
    stream_error_of,
    to_anthropic,
    to_openai,
)
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    ChatStream,
    Completion,
    FinishReason,
    ProviderError,
    SDKProvider,
    WaitBudget,
    retry_after_s,
)
from router.providers.batch import (
    ANTHROPIC_LIMITS,
    BatchItem,
    BatchPoll,
    BodyItem,
    ChatBatchPoll,
    check_anthropic_custom_id,
    read_anthropic_results,
)
from router.tokens import text_of

if TYPE_CHECKING:
    import asyncio

    from anthropic import AsyncStream
    from anthropic.types import (
        MessageParam,
        RawMessageStreamEvent,
        ToolChoiceToolParam,
        ToolParam,
    )

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"

# Anthropic API reference, Messages "stop_reason": end_turn | max_tokens | stop_sequence |
# tool_use | pause_turn | refusal | model_context_window_exceeded.
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
}


def finish_reason_of(stop_reason: str | None) -> FinishReason:
    """Our finish reason for an Anthropic ``stop_reason``.

    ``max_tokens`` and ``model_context_window_exceeded`` (the reply was cut off) are
    ``length``; ``refusal`` is ``refusal``; ``end_turn`` and ``stop_sequence`` are ``stop``;
    ``tool_use``, ``pause_turn`` and null are ``other``.
    """
    return _FINISH.get(stop_reason or "", "other")


def map_error(exc: anthropic.AnthropicError, *, timeout_s: float) -> ProviderError:
    """A :class:`ProviderError` for an SDK error, after the SDK's own retries.

    Transient: timeouts, connection errors and status 408, 409, 429 and 5xx (529 overloaded
    included), the ones the SDK itself retries. Anything else (400, 401, 403, 404, 413, 422,
    a reply the SDK cannot read, missing credentials) is permanent. For an HTTP error
    ``upstream_status`` is its status and ``retry_after_s`` the wait its ``retry-after-ms`` /
    ``retry-after`` header asks for, s (:func:`router.providers.base.retry_after_s`; None when
    absent). An ``error`` event in a stream reaches us as an ``APIStatusError`` of the stream's
    HTTP status, 200: it is read by its error type instead (:func:`stream_error_of`).
    """
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(f"anthropic: no reply within {timeout_s:g} s", transient=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(f"anthropic: connection failed: {exc}", transient=True)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if 200 <= status < 300:
            return stream_error_of(exc.body)
        transient = status in (408, 409, 429) or status >= 500
        return ProviderError(
            f"anthropic: HTTP {status}: {exc.message}",
            transient=transient,
            upstream_status=status,
            retry_after_s=retry_after_s(exc.response.headers),
        )
    return ProviderError(f"anthropic: {type(exc).__name__}: {exc}", transient=False)


class _BudgetMiddleware(anthropic.Middleware):
    """Runs the wait budget on every attempt's response, before the SDK sleeps on it."""

    def __init__(self, budget: WaitBudget) -> None:
        self._budget = budget

    async def handle_async(
        self, request: anthropic.APIRequest, call_next: anthropic.AsyncCallNext
    ) -> anthropic.AsyncAPIResponse[Any]:
        response = await call_next(request)
        self._budget.check(response.status_code, response.headers)
        return response


def _split_system(request: ChatRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """Anthropic takes the system prompt as a top-level ``system`` string, not a message:
    ``request.system`` and any ``system``-role messages are joined (blank line between)."""
    systems = [request.system] if request.system else []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.get("role") == "system":
            systems.append(text_of(message.get("content")))
        else:
            messages.append({"role": message.get("role"), "content": message.get("content")})
    return ("\n\n".join(systems) if systems else None), messages


_TOOL_DESCRIPTION = "Record your verdict. Call this tool exactly once with your final answer."


def verdict_tool_of(request: ChatRequest) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(tool, tool_choice)`` for ``request.verdict_schema``, or None when it has none.

    Forced tool use (Anthropic docs, "Tool use": "Forcing tool use" and JSON output through a
    tool): one client tool whose ``input_schema`` is the schema, and a ``tool_choice`` naming
    it, so the reply is a ``{"type": "tool_use", "name", "input": {...}}`` content block with
    ``input`` matching the schema and ``stop_reason`` ``tool_use``::

        tools=[{"name": <verdict_name>, "description": ..., "input_schema": <verdict_schema>}]
        tool_choice={"type": "tool", "name": <verdict_name>}

    The schema's own ``description``, if any, is the tool's description.
    """
    if request.verdict_schema is None:
        return None
    description = request.verdict_schema.get("description")
    tool = {
        "name": request.verdict_name,
        "description": description if isinstance(description, str) else _TOOL_DESCRIPTION,
        "input_schema": request.verdict_schema,
    }
    return tool, {"type": "tool", "name": request.verdict_name}


def params_of(request: ChatRequest) -> dict[str, Any]:
    """The Messages body for ``request`` (without ``model`` handling beyond naming it):
    ``model``, ``messages``, ``max_tokens``, ``system`` when there is one
    (:func:`_split_system`), and the forced verdict tool (:func:`verdict_tool_of`). A batch
    request's ``params`` are this body."""
    system, messages = _split_system(request)
    params: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
    }
    if system:
        params["system"] = system
    verdict_tool = verdict_tool_of(request)
    if verdict_tool is not None:
        params["tools"] = [verdict_tool[0]]
        params["tool_choice"] = verdict_tool[1]
    return params


def message_response_of(message: Message) -> ChatResponse:
    """Our :class:`ChatResponse` for a Messages reply (a call's, or a succeeded batch
    result's ``message``); see :meth:`AnthropicProvider.complete` for the text and finish
    reason.

    Raises:
        ProviderError: an unreadable usage object (permanent).
    """
    usage_raw = message.usage.model_dump(mode="json") if message.usage else None
    try:
        usage = normalize_usage(usage_raw)
    except InvalidInput as exc:
        raise ProviderError(f"anthropic: unreadable usage: {exc.message}") from exc
    tool_use = next((b for b in message.content if isinstance(b, ToolUseBlock)), None)
    finish = finish_reason_of(message.stop_reason)
    if tool_use is not None:
        text = json.dumps(tool_use.input, ensure_ascii=False)
        if message.stop_reason == "tool_use":
            finish = "stop"
    else:
        text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    return ChatResponse(
        text=text,
        model=message.model,
        finish_reason=finish,
        usage=usage,
        raw={"id": message.id, "stop_reason": message.stop_reason, "usage": usage_raw},
    )


class AnthropicProvider(SDKProvider):
    """Reference calls over Anthropic Messages (``POST {base_url}/v1/messages``).

    Args:
        api_key: the API key (``SecretStr``; revealed only to the SDK).
        base_url: ``https://api.anthropic.com`` or a compatible server (without ``/v1``).
        concurrency: calls in flight at once (an ``asyncio.Semaphore``), >= 1.
        max_retries: the SDK's retries per call, >= 0.
        timeout_s: the SDK's timeout for one HTTP attempt, s.
        budget_s: the longest a call may wait on retry hints, s (:class:`WaitBudget`).
    """

    name = "anthropic"
    supports_structured_output = True

    def __init__(
        self,
        *,
        api_key: SecretStr,
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = 8,
        max_retries: int = 2,
        timeout_s: float = 120.0,
        budget_s: float = 60.0,
    ) -> None:
        super().__init__(
            concurrency=concurrency,
            timeout_s=timeout_s,
            budget_s=budget_s,
            setting="anthropic_concurrency",
        )
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key.get_secret_value(),
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout_s,
            middleware=[_BudgetMiddleware(self.budget)],
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One Messages call (non-streaming). The system prompt goes in ``system``
        (:func:`_split_system`); ``max_tokens`` as given. ``request.temperature`` is not sent:
        API version 2026-10-21, which SDK 2.x sends, answers 400 to any ``temperature``,
        ``top_p`` or ``top_k`` and the SDK no longer has them. A ``request.verdict_schema`` is
        sent as one forced tool (:func:`verdict_tool_of`).

        Returns the text (``json.dumps`` of the first ``tool_use`` block's ``input`` when the
        reply has one, else every ``text`` content block, joined), the finish reason
        (:func:`finish_reason_of`; ``stop`` for a reply read from a ``tool_use`` block that
        ended with ``stop_reason`` ``tool_use``, as a forced tool call does) and usage in tokens
        via :func:`router.pricing.normalize_usage` (``input_tokens`` excludes
        ``cache_read_input_tokens`` and ``cache_creation_input_tokens``; all three are billed:
        Anthropic docs, "Prompt caching", tracking cache performance).

        Raises:
            Deferred: a retry hint exceeds the wait budget (no sleep happened).
            ProviderError: the call failed after the SDK's retries (:func:`map_error`), or the
                usage object is unreadable (permanent).
        """
        params = params_of(request)
        async with self.slot(request.model):
            try:
                message = await self._client.messages.create(
                    model=request.model,
                    messages=cast("list[MessageParam]", params["messages"]),
                    max_tokens=request.max_tokens,
                    system=params.get("system", anthropic.omit),
                    tools=cast("list[ToolParam]", params.get("tools", anthropic.omit)),
                    tool_choice=cast(
                        "ToolChoiceToolParam", params.get("tool_choice", anthropic.omit)
                    ),
                )
            except anthropic.AnthropicError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
        return message_response_of(message)

    # ---- batches (Anthropic "Message Batches") ----

    batch_limits = ANTHROPIC_LIMITS

    def batch_size_of(self, item: BatchItem) -> int:
        request = {"custom_id": item[0], "params": params_of(item[1])}
        return len(json.dumps(request, ensure_ascii=False).encode()) + 1

    async def submit_batch(self, items: Sequence[BatchItem]) -> str:
        """``POST /v1/messages/batches`` with ``requests: [{"custom_id", "params"}]``, each
        ``params`` the Messages body :meth:`complete` sends (:func:`params_of`). Returns the
        message batch id.

        Raises:
            InvalidInput: no items, more than 100,000 or 256 MB, or a custom id that is not 1-64
                characters of ``[a-zA-Z0-9_-]``.
            ProviderError: the create call failed (:func:`map_error`).
        """
        for custom_id, _ in items:
            check_anthropic_custom_id(custom_id)
        if not items or len(items) > ANTHROPIC_LIMITS.max_requests:
            raise InvalidInput(
                f"a batch holds 1 to 100,000 requests, not {len(items)}", field="items"
            )
        size = sum(self.batch_size_of(item) for item in items)
        if size > ANTHROPIC_LIMITS.max_bytes:
            raise InvalidInput(f"a batch is at most 256 MB, not {size} bytes", field="items")
        requests = [{"custom_id": c, "params": params_of(r)} for c, r in items]
        async with self.slot(items[0][1].model):
            try:
                batch = await self._client.messages.batches.create(requests=cast("Any", requests))
            except anthropic.AnthropicError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
        return batch.id

    async def _ended_rows(self, batch_id: str) -> list[dict[str, Any]] | str:
        """The batch's result rows once ``processing_status`` is ``ended``; before, that
        status (a str)."""
        try:
            batch = await self._client.messages.batches.retrieve(batch_id)
            if batch.processing_status != "ended":
                return str(batch.processing_status)
            decoder = await self._client.messages.batches.results(batch_id)
        except anthropic.NotFoundError as exc:
            raise ProviderError(
                f"anthropic: batch {batch_id} not found (yet)", transient=True, upstream_status=404
            ) from exc
        except anthropic.AnthropicError as exc:
            raise map_error(exc, timeout_s=self._timeout_s) from exc
        rows: list[dict[str, Any]] = []
        try:
            async for row in decoder:
                rows.append(row.model_dump(mode="json"))
        except (ValueError, anthropic.AnthropicError, httpx2.HTTPError) as exc:
            log.warning(
                "anthropic batch %s: results broke off after %d rows: %s", batch_id, len(rows), exc
            )
        return rows

    def _chat_params(self, item: BodyItem) -> dict[str, Any]:
        kwargs = dict(to_anthropic(item[1]).kwargs)
        kwargs.pop("stream", None)
        return {"custom_id": item[0], "params": kwargs}

    def chat_batch_size_of(self, item: BodyItem) -> int:
        return len(json.dumps(self._chat_params(item), ensure_ascii=False).encode()) + 1

    async def submit_chat_batch(self, items: Sequence[BodyItem]) -> str:
        """``POST /v1/messages/batches`` with each body translated into Messages ``params`` by
        :func:`router.providers.anthropic_chat.to_anthropic`, as :meth:`submit_batch`.

        Raises:
            InvalidInput: no items, over the limits, a bad custom id, or a body Anthropic
                cannot express (``field`` names it).
            ProviderError: the create call failed (:func:`map_error`).
        """
        for custom_id, _ in items:
            check_anthropic_custom_id(custom_id)
        if not items or len(items) > ANTHROPIC_LIMITS.max_requests:
            raise InvalidInput(
                f"a batch holds 1 to 100,000 requests, not {len(items)}", field="items"
            )
        requests = [self._chat_params(item) for item in items]
        size = sum(len(json.dumps(r, ensure_ascii=False).encode()) + 1 for r in requests)
        if size > ANTHROPIC_LIMITS.max_bytes:
            raise InvalidInput(f"a batch is at most 256 MB, not {size} bytes", field="items")
        async with self.slot(str(items[0][1].get("model"))):
            try:
                batch = await self._client.messages.batches.create(requests=cast("Any", requests))
            except anthropic.AnthropicError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
        return batch.id

    async def poll_chat_batch(self, batch_id: str, expected: Collection[str]) -> ChatBatchPoll:
        """:meth:`poll_batch` with each ``succeeded`` message translated into an OpenAI
        ``chat.completion`` (:func:`router.providers.anthropic_chat.to_openai`), its usage
        Anthropic's own.

        Raises:
            ProviderError: as :meth:`poll_batch`.
        """
        rows = await self._ended_rows(batch_id)
        if isinstance(rows, str):
            return ChatBatchPoll(False, rows)

        def parse(message: dict[str, Any]) -> Completion:
            Message.model_validate(message)
            return Completion(body=to_openai(message), usage=message.get("usage"))

        results, rejected = read_anthropic_results(rows, batch_id, expected, parse)
        return ChatBatchPoll(True, "ended", results, rejected)

    async def cancel_batch(self, batch_id: str) -> None:
        """``POST /v1/messages/batches/{id}/cancel``.

        Raises:
            ProviderError: the call failed (:func:`map_error`).
        """
        try:
            await self._client.messages.batches.cancel(batch_id)
        except anthropic.AnthropicError as exc:
            raise map_error(exc, timeout_s=self._timeout_s) from exc

    async def poll_batch(self, batch_id: str, expected: Collection[str]) -> BatchPoll:
        """``GET /v1/messages/batches/{id}``; once ``processing_status`` is ``ended``, its
        results (``GET`` the batch's ``results_url``, JSONL) read by
        :func:`router.providers.batch.read_anthropic_results`. ``in_progress`` and
        ``canceling`` are not ended. A results stream that breaks off keeps the rows read
        before (the rest are missing, as if they never ran).

        Raises:
            ProviderError: the call failed (:func:`map_error`); a 404 is transient (a batch just
                created may not be visible yet).
        """
        rows = await self._ended_rows(batch_id)
        if isinstance(rows, str):
            return BatchPoll(False, rows)
        results, rejected = read_anthropic_results(
            rows, batch_id, expected, lambda m: message_response_of(Message.model_validate(m))
        )
        return BatchPoll(True, "ended", results, rejected)

    async def chat_completion(self, body: Mapping[str, Any]) -> Completion:
        """One gateway call, non-streaming: ``body`` (an OpenAI Chat Completions request, its
        ``model`` the Anthropic model id) is translated by
        :func:`router.providers.anthropic_chat.to_anthropic` and sent as one Messages call;
        the reply comes back as an OpenAI ``chat.completion``
        (:func:`router.providers.anthropic_chat.to_openai`). ``Completion.usage`` is
        Anthropic's ``usage`` object as sent (``input_tokens`` excluding the cache read and
        cache creation counts, which it lists apart).

        Raises:
            InvalidInput: the request asks for what Anthropic cannot do (``field`` names it).
            Deferred: a retry hint exceeds the wait budget (no sleep happened).
            ProviderError: the call failed after the SDK's retries (:func:`map_error`:
                ``upstream_status``, ``retry_after_s``, ``transient``).
        """
        request = to_anthropic(body)
        model = request.kwargs["model"]
        async with self.slot(model):
            try:
                message = await self._client.messages.create(**request.kwargs)
            except anthropic.AnthropicError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
        raw = message.model_dump(mode="json")
        return Completion(body=to_openai(raw, json_tool=request.json_tool), usage=raw.get("usage"))

    async def open_stream(self, body: Mapping[str, Any]) -> ChatStream:
        """Open one streamed gateway call (``stream=True``); returns once Anthropic answered
        200, so an error before the first event (after the SDK's retries) raises here.

        The stream holds one of this provider's ``concurrency`` places until it ends, fails
        or is closed: a stream is a call in flight. The wait budget covers the opening (the
        SDK retries only that). The returned :class:`ChatStream` yields OpenAI
        ``chat.completion.chunk`` dicts (:class:`router.providers.anthropic_chat.StreamTranslator`),
        the usage-only chunk (``choices: []``) always last; ``usage`` is Anthropic's native
        usage merged over the stream, ``model`` the id Anthropic reported. Close it
        (``aclose``) when done with it early: that drops the HTTP connection, which cancels
        the call upstream.

        Raises:
            InvalidInput | Deferred | ProviderError: as :meth:`chat_completion`.
        """
        request = to_anthropic(body)
        model = request.kwargs["model"]
        gate = self._gate
        await gate.acquire()
        try:
            with self.budget.call(model):
                stream = await self._client.messages.create(**request.kwargs, stream=True)
        except anthropic.AnthropicError as exc:
            gate.release()
            raise map_error(exc, timeout_s=self._timeout_s) from exc
        except BaseException:
            gate.release()
            raise
        return _AnthropicChatStream(
            stream, StreamTranslator(json_tool=request.json_tool), gate, self._timeout_s
        )

    async def aclose(self) -> None:
        """Close the SDK client and its connections."""
        await self._client.close()


class _AnthropicChatStream(ChatStream):
    """An open Anthropic stream read as OpenAI chunks (see :meth:`AnthropicProvider.open_stream`).

    Raises (while iterating):
        ProviderError: an ``error`` event (transient for ``overloaded_error``, ``api_error``,
            ``rate_limit_error``), a dropped connection or read timeout (transient), or a
            stream that ended before ``message_stop`` (transient).
    """

    def __init__(
        self,
        stream: AsyncStream[RawMessageStreamEvent],
        translator: StreamTranslator,
        gate: asyncio.Semaphore,
        timeout_s: float,
    ) -> None:
        self._stream = stream
        self._translator = translator
        self._gate: asyncio.Semaphore | None = gate
        self._timeout_s = timeout_s
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._stopped = False
        self._ended = False

    async def __anext__(self) -> dict[str, Any]:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    async def _read(self) -> None:
        try:
            event = await self._stream.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            if not self._stopped:
                raise ProviderError(
                    "anthropic: stream ended before message_stop", transient=True
                ) from None
            return
        except anthropic.AnthropicError as exc:
            await self.aclose()
            raise map_error(exc, timeout_s=self._timeout_s) from exc
        except httpx2.TimeoutException as exc:
            await self.aclose()
            raise ProviderError(
                f"anthropic: stream stalled for {self._timeout_s:g} s", transient=True
            ) from exc
        except httpx2.TransportError as exc:
            await self.aclose()
            raise ProviderError(f"anthropic: stream broke off: {exc!r}", transient=True) from exc
        try:
            chunks = self._translator.feed(event.model_dump(mode="json"))
        except ProviderError:
            await self.aclose()
            raise
        self.usage = self._translator.usage
        self.model = self._translator.model
        self._pending.extend(chunks)
        if event.type == "message_stop":
            self._stopped = True

    async def aclose(self) -> None:
        """Close the SDK stream (drops the connection if unread) and free the place it held;
        idempotent. Iterating afterwards ends the iteration."""
        self._ended = True
        try:
            await self._stream.close()
        finally:
            if self._gate is not None:
                self._gate.release()
                self._gate = None
