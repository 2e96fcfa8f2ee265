"""OpenAI Chat Completions adapter on the official SDK (``openai.AsyncOpenAI``).

Any OpenAI-compatible server (vLLM, llama.cpp, Ollama, a gateway) works through ``base_url``.

Retries are the SDK's own: it retries connection errors, timeouts, 408, 409, 429 and 5xx up to
``max_retries`` times, sleeping the ``retry-after-ms`` / ``retry-after`` the server asks for when
it is at most 120 s, else an exponential backoff from 0.5 s capped at 8 s (openai-python
``_base_client.py``: ``_should_retry``, ``_calculate_retry_timeout``; "Retries" in its README).
There is no retry loop here. What this adapter adds is the wait budget for retry hints: an
httpx response hook on the SDK's HTTP client runs :meth:`WaitBudget.check` on every response
before the SDK sleeps, and raises :class:`Deferred` when the hint exceeds what is left of the
budget. The SDK lets any exception that is not an httpx transport error or an ``OpenAIError``
propagate from sending unchanged and unretried, so the Deferred reaches the caller as is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import httpx2
import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from router.errors import InvalidInput
from router.pricing import normalize_usage
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    ChatStream,
    Completion,
    FinishReason,
    ProviderError,
    SDKProvider,
    retry_after_s,
)
from router.providers.batch import (
    OPENAI_LIMITS,
    BatchItem,
    BatchPoll,
    BodyItem,
    ChatBatchPoll,
    read_openai_results,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.chat.completion_create_params import ResponseFormat

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# OpenAI API reference, "The chat completion object": choices[].finish_reason is one of
# stop | length | tool_calls | content_filter | function_call.
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "refusal",
}


def finish_reason_of(native: str | None, refusal: str | None) -> FinishReason:
    """Our finish reason for an OpenAI choice.

    A non-null ``message.refusal`` (OpenAI "Refusals" guide) or ``content_filter`` is
    ``refusal``; ``length`` (the ``max_completion_tokens`` cap) is ``length``; ``stop`` is
    ``stop``; anything else (``tool_calls``, ``function_call``, null) is ``other``.
    """
    if refusal:
        return "refusal"
    return _FINISH.get(native or "", "other")


def response_format_of(request: ChatRequest) -> dict[str, Any] | None:
    """The ``response_format`` for ``request.verdict_schema``, or None when it has none.

    Structured Outputs (OpenAI API reference, Chat Completions ``response_format``; "Structured
    Outputs" guide)::

        {"type": "json_schema",
         "json_schema": {"name": <verdict_name>, "schema": <verdict_schema>, "strict": true}}

    With ``strict`` the reply's ``message.content`` is a JSON string matching the schema (strict
    mode wants every property in ``required`` and ``additionalProperties: false``), or the model
    refuses through ``message.refusal``.
    """
    if request.verdict_schema is None:
        return None
    return {
        "type": "json_schema",
        "json_schema": {
            "name": request.verdict_name,
            "schema": request.verdict_schema,
            "strict": True,
        },
    }


def map_error(exc: openai.OpenAIError, *, timeout_s: float) -> ProviderError:
    """A :class:`ProviderError` for an SDK error, after the SDK's own retries.

    Transient: timeouts (``APITimeoutError``), connection errors (``APIConnectionError``) and
    status 408, 409, 429 and 5xx, the ones the SDK itself retries. Anything else (400, 401, 403,
    404, 422, a reply the SDK cannot read) is permanent. A status error carries
    ``upstream_status`` and the ``retry-after-ms`` / ``retry-after`` it asked for
    (:func:`router.providers.base.retry_after_s`); an error event inside a stream (an
    ``APIError`` without a status) is transient, as the stream was cut by the server.
    """
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"openai: no reply within {timeout_s:g} s", transient=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"openai: connection failed: {exc}", transient=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        transient = status in (408, 409, 429) or status >= 500
        return ProviderError(
            f"openai: HTTP {status}: {exc.message}",
            transient=transient,
            upstream_status=status,
            retry_after_s=retry_after_s(exc.response.headers),
        )
    if isinstance(exc, openai.APIError):
        return ProviderError(f"openai: error in the stream: {exc.message}", transient=True)
    return ProviderError(f"openai: {type(exc).__name__}: {exc}", transient=False)


_PATH = "/chat/completions"


def _messages_of(request: ChatRequest) -> list[dict[str, Any]]:
    """``request.system`` (if any) as a first ``system`` message, then the messages as given."""
    messages: list[dict[str, Any]] = list(request.messages)
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    return messages


def _batch_line(custom_id: str, request: ChatRequest) -> str:
    """One line of a batch input file: the Chat Completions body :meth:`OpenAIProvider.complete`
    sends, as JSON (OpenAI "Batch API", preparing the batch file)."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": _messages_of(request),
        "max_completion_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    response_format = response_format_of(request)
    if response_format is not None:
        body["response_format"] = response_format
    return _body_line(custom_id, body)


def _body_line(custom_id: str, body: Mapping[str, Any]) -> str:
    """One line of a batch input file for a Chat Completions ``body``, as JSON."""
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def chat_response_of(completion: ChatCompletion) -> ChatResponse:
    """Our :class:`ChatResponse` for a chat completion object (a call's reply, or the body of
    a batch result line).

    Raises:
        ProviderError: no choice, or an unreadable usage object (permanent).
    """
    if not completion.choices:
        raise ProviderError("openai: reply has no choices", transient=False)
    choice = completion.choices[0]
    message = choice.message
    refusal = getattr(message, "refusal", None)
    usage_raw = completion.usage.model_dump(mode="json") if completion.usage else None
    try:
        usage = normalize_usage(usage_raw)
    except InvalidInput as exc:
        raise ProviderError(f"openai: unreadable usage: {exc.message}") from exc
    return ChatResponse(
        text=message.content or refusal or "",
        model=completion.model,
        finish_reason=finish_reason_of(choice.finish_reason, refusal),
        usage=usage,
        raw={
            "id": completion.id,
            "finish_reason": choice.finish_reason,
            "refusal": refusal,
            "usage": usage_raw,
        },
    )


class _Stream(ChatStream):
    """An open Chat Completions stream: the SDK's server-sent events as dicts, usage kept when
    it comes. It holds its place under the adapter's concurrency gate until closed."""

    def __init__(
        self, stream: openai.AsyncStream[object], gate: asyncio.Semaphore, timeout_s: float
    ) -> None:
        self._stream = stream
        self._chunks = stream.__aiter__()
        self._gate: asyncio.Semaphore | None = gate
        self._timeout_s = timeout_s

    async def __anext__(self) -> dict[str, Any]:
        try:
            data = await self._chunks.__anext__()
        except openai.OpenAIError as exc:
            raise map_error(exc, timeout_s=self._timeout_s) from exc
        except ValueError as exc:  # the SDK's json.loads of an event that is not JSON
            message = f"openai: a stream event is not JSON: {exc}"
            raise ProviderError(message, transient=True) from exc
        if not isinstance(data, dict):
            raise ProviderError("openai: a stream chunk is not a JSON object", transient=True)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if self.model is None and isinstance(data.get("model"), str):
            self.model = data["model"]
        return data

    async def aclose(self) -> None:
        """Close the SDK stream (drops the connection if unread) and free the place it held;
        idempotent."""
        try:
            await self._stream.close()
        finally:
            if self._gate is not None:
                self._gate.release()
                self._gate = None


class OpenAIProvider(SDKProvider):
    """Reference calls over OpenAI Chat Completions (``POST {base_url}/chat/completions``).

    Args:
        api_key: the API key (``SecretStr``; revealed only to the SDK).
        base_url: ``https://api.openai.com/v1`` or any OpenAI-compatible server's ``/v1``.
        concurrency: calls in flight at once (an ``asyncio.Semaphore``), >= 1.
        max_retries: the SDK's retries per call, >= 0.
        timeout_s: the SDK's timeout for one HTTP attempt, s.
        budget_s: the longest a call may wait on retry hints, s (:class:`WaitBudget`).
    """

    name = "openai"
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
            setting="openai_concurrency",
        )
        # The SDK's DefaultAsyncHttpxClient keeps its connection limits and redirects; the only
        # addition is the response hook that enforces the wait budget before the SDK sleeps.
        http_client = openai.DefaultAsyncHttpxClient(
            event_hooks={"response": [self._check_response]}
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key.get_secret_value(),
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout_s,
            http_client=http_client,
        )

    async def _check_response(self, response: httpx2.Response) -> None:
        self.budget.check(response.status_code, response.headers)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One Chat Completions call: ``request.system`` (if any) is sent as the first message
        with role ``system``, then ``request.messages`` as given; ``max_tokens`` is sent as
        ``max_completion_tokens`` (the current name; ``max_tokens`` is deprecated for it). A
        ``request.verdict_schema`` is sent as a strict ``response_format``
        (:func:`response_format_of`); the reply text is then the JSON string.

        Returns text (``message.content``, else ``message.refusal``, else ""), the finish reason
        (:func:`finish_reason_of`) and usage in tokens via :func:`router.pricing.normalize_usage`
        (``prompt_tokens`` includes ``cached_tokens``; ``completion_tokens`` includes
        ``reasoning_tokens``: OpenAI API reference, chat completion ``usage``).

        Raises:
            Deferred: a retry hint exceeds the wait budget (no sleep happened).
            ProviderError: the call failed after the SDK's retries (:func:`map_error`), or the
                reply has no choice or an unreadable usage object (permanent).
        """
        messages = _messages_of(request)
        response_format = response_format_of(request)
        async with self.slot(request.model):
            try:
                completion = await self._client.chat.completions.create(
                    model=request.model,
                    messages=cast("list[ChatCompletionMessageParam]", messages),
                    max_completion_tokens=request.max_tokens,
                    temperature=request.temperature,
                    response_format=(
                        cast("ResponseFormat", response_format)
                        if response_format is not None
                        else openai.omit
                    ),
                )
            except openai.OpenAIError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
        return self._response(completion)

    def _response(self, completion: ChatCompletion) -> ChatResponse:
        return chat_response_of(completion)

    # ---- batches (OpenAI "Batch API") ----

    batch_limits = OPENAI_LIMITS

    def batch_size_of(self, item: BatchItem) -> int:
        return len(_batch_line(*item).encode()) + 1

    async def submit_batch(self, items: Sequence[BatchItem]) -> str:
        """Upload ``items`` as one JSONL file (``POST /files``, purpose ``batch``), one line
        per call: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``
        with the body :meth:`complete` would send; then ``POST /batches`` with that file,
        ``endpoint`` ``/v1/chat/completions`` and ``completion_window`` ``24h``. Returns the
        batch id.

        Raises:
            InvalidInput: more than 50,000 requests or 200 MB, or no items.
            ProviderError: an upload or create call failed (:func:`map_error`).
        """
        data = "".join(_batch_line(custom_id, request) + "\n" for custom_id, request in items)
        return await self._submit_file(
            data.encode(), len(items), items[0][1].model if items else ""
        )

    async def _submit_file(self, payload: bytes, count: int, model: str) -> str:
        if not count or count > OPENAI_LIMITS.max_requests:
            raise InvalidInput(f"a batch holds 1 to 50,000 requests, not {count}", field="items")
        if len(payload) > OPENAI_LIMITS.max_bytes:
            raise InvalidInput(
                f"a batch file is at most 200 MB, not {len(payload)} bytes", field="items"
            )
        async with self.slot(model):
            try:
                uploaded = await self._client.files.create(
                    file=("batch.jsonl", payload, "application/jsonl"), purpose="batch"
                )
                batch = await self._client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
            except openai.OpenAIError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
        return batch.id

    def chat_batch_size_of(self, item: BodyItem) -> int:
        return len(_body_line(*item).encode()) + 1

    async def submit_chat_batch(self, items: Sequence[BodyItem]) -> str:
        """Upload the bodies as one JSONL file, one line each ``{"custom_id", "method": "POST",
        "url": "/v1/chat/completions", "body"}`` (the body as the caller sent it, ``model`` the
        id to send), then ``POST /batches`` as :meth:`submit_batch`.

        Raises:
            InvalidInput: more than 50,000 requests or 200 MB, or no items.
            ProviderError: an upload or create call failed (:func:`map_error`).
        """
        data = "".join(_body_line(custom_id, body) + "\n" for custom_id, body in items)
        model = str(items[0][1].get("model")) if items else ""
        return await self._submit_file(data.encode(), len(items), model)

    async def _ended_texts(self, batch_id: str) -> tuple[str, list[str] | None]:
        """The batch's status, and once it ended its output and error files' text (None while
        it runs)."""
        try:
            batch = await self._client.batches.retrieve(batch_id)
            if batch.status not in ("completed", "expired", "cancelled", "failed"):
                return batch.status, None
            texts = []
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    texts.append((await self._client.files.content(file_id)).text)
        except openai.NotFoundError as exc:
            raise ProviderError(
                f"openai: batch {batch_id} not found (yet)", transient=True, upstream_status=404
            ) from exc
        except openai.OpenAIError as exc:
            raise map_error(exc, timeout_s=self._timeout_s) from exc
        return batch.status, texts

    async def poll_chat_batch(self, batch_id: str, expected: Collection[str]) -> ChatBatchPoll:
        """:meth:`poll_batch` with each answer the result line's chat completion body as
        sent, its ``usage`` as the usage.

        Raises:
            ProviderError: as :meth:`poll_batch`.
        """
        status, texts = await self._ended_texts(batch_id)
        if texts is None:
            return ChatBatchPoll(False, status)

        def parse(body: dict[str, Any]) -> Completion:
            if not isinstance(body.get("choices"), list):
                raise ValueError("a chat completion without choices")
            usage = body.get("usage")
            return Completion(body=body, usage=usage if isinstance(usage, dict) else None)

        results, rejected = read_openai_results(texts, batch_id, expected, parse)
        return ChatBatchPoll(True, status, results, rejected)

    async def cancel_batch(self, batch_id: str) -> None:
        """``POST /batches/{id}/cancel``.

        Raises:
            ProviderError: the call failed (:func:`map_error`).
        """
        try:
            await self._client.batches.cancel(batch_id)
        except openai.OpenAIError as exc:
            raise map_error(exc, timeout_s=self._timeout_s) from exc

    async def poll_batch(self, batch_id: str, expected: Collection[str]) -> BatchPoll:
        """``GET /batches/{id}``; once the batch is ``completed``, ``expired``, ``cancelled``
        or ``failed``, the text of its output file and its error file (``GET
        /files/{id}/content``; either may be absent: a completed batch whose every line failed
        has no output file) read by :func:`router.providers.batch.read_openai_results`.
        ``validating``, ``in_progress``, ``finalizing`` and ``cancelling`` are not ended.

        Raises:
            ProviderError: the call failed (:func:`map_error`); a 404 is transient (a batch just
                created may not be visible yet).
        """
        status, texts = await self._ended_texts(batch_id)
        if texts is None:
            return BatchPoll(False, status)
        results, rejected = read_openai_results(
            texts,
            batch_id,
            expected,
            lambda body: chat_response_of(ChatCompletion.model_validate(body)),
        )
        return BatchPoll(True, status, results, rejected)

    async def chat_completion(self, body: Mapping[str, Any]) -> Completion:
        """One gateway call, passed through: ``body`` goes upstream as sent, through the SDK's
        generic ``post`` (its retries, errors and headers; no per-parameter transform or model
        parsing: the gateway relays the JSON as it came). ``usage`` is the reply's own.

        Raises:
            ProviderError: as :func:`map_error` (``upstream_status``, ``retry_after_s`` set), or
                a 200 whose body is not JSON or has no ``choices`` (an error object in a 200:
                transient, so the gateway tries the next model).
        """
        async with self.slot(str(body["model"])):
            try:
                reply = await self._client.post(_PATH, body=dict(body), cast_to=object)
            except openai.OpenAIError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
            except ValueError as exc:  # a 200 whose body is not JSON
                raise ProviderError(f"openai: reply is not JSON: {exc}", transient=True) from exc
        if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list):
            detail = reply.get("error") if isinstance(reply, dict) else None
            raise ProviderError(
                f"openai: a 200 reply without choices{f': {detail}' if detail else ''}",
                transient=True,
                upstream_status=200,
            )
        usage = reply.get("usage")
        return Completion(body=reply, usage=usage if isinstance(usage, dict) else None)

    async def embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One embeddings call (``POST /embeddings``), passed through as sent; the reply's
        JSON as it came.

        Raises:
            ProviderError: as :func:`map_error`, or a 200 without ``data``.
        """
        async with self.slot(str(body["model"])):
            try:
                reply = await self._client.post("/embeddings", body=dict(body), cast_to=object)
            except openai.OpenAIError as exc:
                raise map_error(exc, timeout_s=self._timeout_s) from exc
            except ValueError as exc:
                raise ProviderError(f"openai: reply is not JSON: {exc}", transient=True) from exc
        if not isinstance(reply, dict) or not isinstance(reply.get("data"), list):
            raise ProviderError(
                "openai: an embeddings reply without data", transient=True, upstream_status=200
            )
        return reply

    async def open_stream(self, body: Mapping[str, Any]) -> ChatStream:
        """Open one streamed gateway call (``stream: true`` upstream, the rest as sent) through
        the SDK's generic ``post``; returns once the upstream answered 200. Chunks are the
        events' JSON as dicts (no model parsing). A stream is a call in flight: it holds its
        place under the concurrency gate until it is closed (``aclose``), as the Anthropic
        adapter's streams do.

        Raises:
            ProviderError: as :func:`map_error`, before the first chunk.
        """
        model = str(body["model"])
        gate = self._gate
        await gate.acquire()
        try:
            with self.budget.call(model):
                stream = await self._client.post(
                    _PATH,
                    body={**body, "stream": True},
                    cast_to=object,
                    stream=True,
                    stream_cls=openai.AsyncStream[object],
                )
        except openai.OpenAIError as exc:
            gate.release()
            raise map_error(exc, timeout_s=self._timeout_s) from exc
        except BaseException:
            gate.release()
            raise
        return _Stream(stream, gate, self._timeout_s)

    async def aclose(self) -> None:
        """Close the SDK client and its connections."""
        await self._client.close()
