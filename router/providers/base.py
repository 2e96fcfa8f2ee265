"""The provider interface: one chat call to a reference model, normalised.

Exception tree (all are ``router.errors.TierwiseError``)::

    ProviderError (502, "provider_error")      the call failed; ``transient`` says retry later
    +-- Deferred (503, "deferred")             a rate-limit wait would exceed the job's budget
    +-- ReplayMiss (502, "replay_miss")        the replay provider has no recorded answer
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from router.errors import InvalidInput, TierwiseError
from router.pricing import Usage

if TYPE_CHECKING:
    from router.providers.batch import BatchItem, BatchLimits, BatchPoll, BodyItem, ChatBatchPoll

FinishReason = Literal["stop", "length", "refusal", "other"]


class ProviderError(TierwiseError):
    """A provider call failed. ``transient``: worth trying again later (or on another model).
    ``upstream_status``: the HTTP status the upstream answered (None: no answer, or not HTTP);
    ``retry_after_s``: the wait it asked for, s (None: none named)."""

    code = "provider_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.upstream_status = upstream_status
        self.retry_after_s = retry_after_s


class Deferred(ProviderError):
    """Retry the item in the next run: waiting now would overrun the job's wait budget."""

    code = "deferred"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, transient=True, retry_after_s=retry_after_s)
        self.retry_after_s: float = retry_after_s


class ReplayMiss(ProviderError):
    code = "replay_miss"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat call. ``messages`` are ``{"role", "content"}`` dicts; ``max_tokens`` caps output.

    ``verdict_schema``, when set, asks for the reply as one JSON object matching this JSON
    Schema (an ``{"type": "object", "properties": ..., "required": ..., ...}`` dict), named
    ``verdict_name`` (``[A-Za-z0-9_-]{1,64}``, the rule both APIs set for schema and tool
    names). Only a provider whose ``supports_structured_output`` is True honours it; its
    :class:`ChatResponse` ``text`` is then that object as a JSON string (or, if the model did
    not answer through the schema, whatever text it gave). Others ignore it, so callers send
    it only to providers that support it.
    """

    model: str
    messages: list[dict[str, Any]]
    system: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.0
    verdict_schema: dict[str, Any] | None = None
    verdict_name: str = "verdict"


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A normalised reply: text, why it stopped, and usage in tokens."""

    text: str
    model: str
    finish_reason: FinishReason
    usage: Usage
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """A gateway call's reply. ``body`` is an OpenAI ``chat.completion`` object (OpenAI API
    reference, "The chat completion object"), whatever the upstream spoke; ``usage`` is the
    upstream's own usage object in its native shape (Anthropic's keeps cache writes), None
    when it reported none. ``body["usage"]`` is the OpenAI-shaped view of the same counts."""

    body: dict[str, Any]
    usage: dict[str, Any] | None


class ChatStream(abc.ABC):
    """An open streamed gateway call: the upstream accepted it (HTTP 200), chunks follow.

    Iterating yields OpenAI ``chat.completion.chunk`` objects (dicts) as they arrive; the last
    one of a stream with usage has ``choices: []`` and ``usage`` (OpenAI shape). ``usage`` is
    the upstream's native usage object once it has been reported (for Anthropic the merge of
    ``message_start`` and the last cumulative ``message_delta``, never a sum), else None.
    ``model`` is the model id the upstream reported, once known.

    Raises (while iterating):
        ProviderError: the upstream failed after the stream started (an error event, a cut
            connection); ``transient`` as for :meth:`Provider.complete`.
    """

    usage: dict[str, Any] | None = None
    model: str | None = None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop reading and close the upstream connection (cancels the upstream call)."""


class Provider(abc.ABC):
    """A reference-model client. One abstract method; adapters map SDK shapes to ours."""

    name: str = "provider"
    uses_api_ids: bool = True
    """True when the upstream expects the catalog's ``api_model`` ids (every live API); the
    replay provider's recordings are keyed by catalog names instead."""
    supports_structured_output: bool = False
    """True when :meth:`complete` honours ``ChatRequest.verdict_schema`` (a native JSON-schema
    reply mode: OpenAI ``response_format``, Anthropic forced tool use)."""

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one chat call.

        Raises:
            ProviderError: the call failed after the SDK's own retries (``transient`` set for
                429/5xx/timeouts); Deferred when a rate-limit wait exceeds the budget.
        """

    async def embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One OpenAI-compatible embeddings call (``{"model", "input": [text, ...]}``); the
        reply in OpenAI's shape ``{"data": [{"index", "embedding"}], "usage":
        {"prompt_tokens"}}`` (OpenAI API reference, "Create embeddings").

        Raises:
            ProviderError: the call failed; permanent for a provider that serves none.
        """
        raise ProviderError(f"provider {self.name} serves no embeddings", transient=False)

    async def chat_completion(self, body: Mapping[str, Any]) -> Completion:
        """One gateway call, non-streaming. ``body`` is an OpenAI Chat Completions request
        (``model`` already the upstream's model id); the reply is in OpenAI's shape whatever
        the upstream speaks.

        Raises:
            ProviderError: the call failed (``upstream_status``, ``retry_after_s`` and
                ``transient`` set from the upstream's answer); permanent for a provider that
                serves no gateway calls.
            InvalidInput: the request asks for something this upstream cannot do (``field``).
        """
        raise ProviderError(f"provider {self.name} serves no gateway calls", transient=False)

    async def open_stream(self, body: Mapping[str, Any]) -> ChatStream:
        """Open one streamed gateway call: returns once the upstream accepted it, so an error
        before the first byte raises here (and a fallback can still be tried).

        Raises:
            ProviderError | InvalidInput: as :meth:`chat_completion`.
        """
        raise ProviderError(f"provider {self.name} serves no gateway calls", transient=False)

    batch_limits: BatchLimits | None = None
    """Requests and bytes one batch may hold; None: this provider has no batch API."""

    def batch_size_of(self, item: BatchItem) -> int:
        """Bytes ``item`` adds to a batch's payload (counted against ``batch_limits``)."""
        return len(json.dumps(item[0]).encode()) + 1

    async def submit_batch(self, items: Sequence[BatchItem]) -> str:
        """Submit ``items`` (unique custom id, call), all for one model, as one batch, within
        ``batch_limits`` (split with :func:`router.providers.batch.plan_batches`); returns the
        provider's batch id.

        Raises:
            InvalidInput: over the limits, or a custom id the provider does not accept.
            ProviderError: the submission failed (``transient`` as for :meth:`complete`);
                permanent for a provider without a batch API.
        """
        raise ProviderError(f"provider {self.name} has no batch API", transient=False)

    async def poll_batch(self, batch_id: str, expected: Collection[str]) -> BatchPoll:
        """Look at batch ``batch_id`` once; ``expected`` are the custom ids submitted (results
        for other ids are rejected). Results come only once the batch ended.

        Raises:
            ProviderError: the look failed; transient (try again later) for a batch the
                provider does not know yet (a 404 right after create) or a 429/5xx.
        """
        raise ProviderError(f"provider {self.name} has no batch API", transient=False)

    def chat_batch_size_of(self, item: BodyItem) -> int:
        """Bytes a passed-through ``item`` adds to a batch's payload (its line or request)."""
        return len(json.dumps({"custom_id": item[0], "body": item[1]}).encode()) + 1

    async def submit_chat_batch(self, items: Sequence[BodyItem]) -> str:
        """Submit passed-through Chat Completions bodies (unique custom id, body with ``model``
        the id to send), all for one model, as one batch within ``batch_limits``; returns the
        provider's batch id. The batch lane's path (:mod:`router.lane`).

        Raises:
            InvalidInput: over the limits, or a body the provider cannot express.
            ProviderError: the submission failed; permanent for a provider without a batch API.
        """
        raise ProviderError(f"provider {self.name} has no batch API", transient=False)

    async def poll_chat_batch(self, batch_id: str, expected: Collection[str]) -> ChatBatchPoll:
        """:meth:`poll_batch` for a batch of :meth:`submit_chat_batch`: answers as OpenAI
        ``chat.completion`` bodies with the provider's usage.

        Raises:
            ProviderError: as :meth:`poll_batch`.
        """
        raise ProviderError(f"provider {self.name} has no batch API", transient=False)

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to cancel batch ``batch_id`` (it ends as cancelled later, with the
        results it already has).

        Raises:
            ProviderError: the call failed; permanent for a provider without a batch API.
        """
        raise ProviderError(f"provider {self.name} has no batch API", transient=False)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# ---- retry hints and the wait budget (docs/field-cases.md) -----------------------------------

# Statuses both SDKs retry after sleeping (openai/anthropic ``_base_client._should_retry``).
_RETRIED_STATUSES = frozenset({408, 409, 429})


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for, in seconds, or None when it names none.

    ``retry-after-ms`` (milliseconds; non-standard, sent by OpenAI and Anthropic) wins over
    ``retry-after``, which is seconds or an HTTP-date (RFC 9110 section 10.2.3). The same order
    the openai and anthropic SDKs read them in (``_parse_retry_after_header``). Negative,
    non-finite or unreadable values count as absent; a date in the past is 0.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class _Call:
    budget: WaitBudget
    key: str
    deadline: float


_CURRENT_CALL: ContextVar[_Call | None] = ContextVar("tierwise_provider_call", default=None)


class WaitBudget:
    """How long one provider call may wait on servers' retry hints before it is deferred.

    The SDKs do the retrying: they sleep exactly the ``retry-after-ms`` / ``retry-after`` a
    429 or 5xx asks for, then try again (up to ``max_retries``). An adapter wraps each call in
    :meth:`call` and runs :meth:`check` on every HTTP response *before* the SDK sleeps on it.
    A hint longer than what is left of ``budget_s`` (counted from the start of the call) raises
    :class:`Deferred` at once instead of sleeping; shorter hints are left to the
    SDK. After a deferral the key (a model) is on hold until the hinted time: calls for it raise
    Deferred without a request while the hold outlasts the budget, so a job does not keep
    knocking on a provider that asked it to wait.

    ``budget_s`` is in seconds; ``clock`` returns seconds (``time.monotonic``).
    """

    def __init__(self, budget_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not budget_s > 0:
            raise ValueError("budget_s must be > 0")
        self.budget_s = budget_s
        self._clock = clock
        self._hold_until: dict[str, float] = {}

    @contextmanager
    def call(self, key: str) -> Iterator[None]:
        """Scope one provider call for ``key``; responses checked inside it share its deadline.

        Raises:
            Deferred: ``key`` is on hold for longer than the budget.
        """
        now = self._clock()
        held = self._hold_until.get(key, now) - now
        if held > self.budget_s:
            raise Deferred(
                f"{key} is rate-limited for {held:.1f} s more (budget {self.budget_s:g} s)",
                retry_after_s=held,
            )
        token = _CURRENT_CALL.set(_Call(self, key, now + self.budget_s))
        try:
            yield
        finally:
            _CURRENT_CALL.reset(token)

    def check(self, status: int, headers: Mapping[str, str]) -> None:
        """Look at one HTTP response before the SDK decides to sleep on it.

        Only statuses the SDKs retry (408, 409, 429, 5xx) and not ``x-should-retry: false``.

        Raises:
            Deferred: the response asks for a wait (s) longer than what is left of the budget.
        """
        if status not in _RETRIED_STATUSES and status < 500:
            return
        if headers.get("x-should-retry") == "false":
            return
        hint = retry_after_s(headers)
        if hint is None:
            return
        now = self._clock()
        call = _CURRENT_CALL.get()
        if call is not None and call.budget is not self:
            call = None
        left = (call.deadline if call is not None else now + self.budget_s) - now
        if hint <= left:
            return
        if call is not None:
            self._hold_until[call.key] = max(self._hold_until.get(call.key, 0.0), now + hint)
        raise Deferred(
            f"HTTP {status} asks to retry in {hint:g} s; {max(left, 0.0):.1f} s left of the "
            f"{self.budget_s:g} s budget",
            retry_after_s=hint,
        )


class SDKProvider(Provider):
    """What the SDK adapters share: a concurrency gate and a :class:`WaitBudget` per provider.

    Args:
        concurrency: calls in flight at once (an ``asyncio.Semaphore``), >= 1.
        timeout_s: the SDK's timeout for one HTTP attempt, s.
        budget_s: the longest a call may wait on retry hints, s (:class:`WaitBudget`).
        setting: the settings field that sets ``concurrency``, named in errors.

    Raises:
        InvalidInput: ``concurrency`` < 1.
    """

    def __init__(
        self, *, concurrency: int, timeout_s: float, budget_s: float, setting: str
    ) -> None:
        if concurrency < 1:
            raise InvalidInput("concurrency must be >= 1", field=setting)
        self.budget = WaitBudget(budget_s)
        self.concurrency = concurrency
        self._timeout_s = timeout_s
        self._gate = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[None]:
        """One call's place: wait for the gate, then scope the call in the wait budget.

        Raises:
            Deferred: ``model`` is on hold for longer than the budget.
        """
        async with self._gate:
            with self.budget.call(model):
                yield
