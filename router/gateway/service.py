"""The gateway's call: route, call the upstream (falling back along the chosen model's chain),
relay, and record decision and outcome through the batch writer, in one hop.

The pipeline of one call, with the places later stages slot in::

    parse_call ─► Router.route (decision to the writer, no I/O)
               ─► stages' before()   (may rewrite the body, or answer: a cache)
               ─► upstream attempts  (the chain of the chosen model; a held model skipped)
               ─► relay              (the reply, or the stream chunk by chunk)
               ─► stages' after()    (see the final result: store in a cache)
               ─► Router.record_call (outcome + sample to the writer, no I/O)

Fallbacks: a call that fails before the first byte with a transient error (429, 5xx, a
timeout, a refused connection) moves to the next model of the chain
(:meth:`router.policy.Policy.fallback_chain`). A ``Retry-After`` the upstream sent holds that
model for that long: calls in the meantime start at the next model of their chain, and a
chain whose every model is held answers 429 with the shortest wait. The SDKs' own retries
(``gateway_max_retries``, default 0) run inside one attempt; nothing here retries the same
model again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog

from router.db import utcnow
from router.decide import RouteDecision
from router.errors import Conflict, InvalidInput, TierwiseError, error_body
from router.gateway.request import REQUEST_ID_HEADER, GatewayCall
from router.outcomes import OutcomeReport
from router.providers.base import ChatStream, Completion, Deferred, Provider, ProviderError
from router.service import Router
from router.task_types import UnknownTaskType
from router.tokens import estimate_text_tokens

log = logging.getLogger(__name__)

Upstream = Callable[[str], tuple[Provider, str]]
"""Catalog model name -> (the adapter that serves it, the model id to send it)."""

RECENT_REQUEST_IDS = 100_000
"""Decision ids of calls with an ``X-Tierwise-Request-Id`` a process remembers (a repeat is
refused): about 10 MB at most."""


class UpstreamFailed(TierwiseError):
    """Every model of the chain failed (or the first failure was permanent). ``status`` is the
    HTTP status the caller gets: the upstream's own for a request it refused as invalid (400,
    404, 413, 422), 429 when rate limits held every model, 504 for timeouts, else 502."""

    code = "upstream_error"

    def __init__(self, message: str, *, status: int, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class Call:
    """One gateway call in flight, as the stages see it. ``body`` may be rewritten by a stage's
    ``before`` (it is what goes upstream); ``chain`` is the models to try, in order.

    For the stages: ``notes`` is where a stage keeps what it did to the call (by stage name,
    for its ``after``; the compression stage), ``state`` what a stage keeps between its
    ``before`` and ``after`` (by stage name; the cache); ``headers`` are added to the response
    (``x-tierwise-*`` names, set in ``before``: why a stage did what it did);
    ``answer_cost_nusd`` is the cost of an answer a stage gave (nano-USD; None: priced from the
    usage like an upstream answer). A stage may replace ``decision`` (and ``decision_row``)
    with one that differs in ``sampled`` only.
    """

    request: GatewayCall
    decision: RouteDecision
    decision_row: dict[str, Any]
    body: dict[str, Any]
    chain: tuple[str, ...]
    started: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    upstream_s: float = 0.0
    recorded: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    answer_cost_nusd: int | None = None
    flex: bool = False
    """Sent on OpenAI's flex processing (``service_tier: "flex"``) where the model is OpenAI's:
    batch prices, slower; a flex 429 (no capacity) is tried again at once in real time."""
    flex_served: bool = False
    """The answer came from flex processing: booked at the catalog's ``batch_discount``."""

    @property
    def called(self) -> list[str]:
        """The models an upstream call went to so far, in order (a held model was skipped, a
        refused one could not be asked)."""
        return [a["model"] for a in self.attempts if a["status"] not in ("held", "refused")]

    @property
    def last_model(self) -> str:
        """The model last called, else the first of the chain: what an outcome is about."""
        called = self.called
        return called[-1] if called else self.chain[0]


@dataclass(frozen=True, slots=True)
class CallResult:
    """How a call ended. ``status``: ``ok``, ``error`` (the upstream failed, before or during
    the stream) or ``cancelled`` (the caller went away mid-stream). ``text`` is the answer as
    the grader sees it (content, then the tool calls as JSON), None when there is none.
    ``message`` is the answer as OpenAI's assistant message (``role``, ``content``, and
    ``tool_calls`` when there were any) and ``finish_reason`` its finish reason, for a call that
    ended ok (streamed or not); else None."""

    status: str
    served_model: str
    usage: dict[str, Any] | None
    text: str | None
    message: dict[str, Any] | None = None
    finish_reason: str | None = None


class Stage(Protocol):
    """A pipeline stage (the semantic cache, prompt compression). ``name`` is recorded as the
    served model of a call it answers."""

    name: str

    async def before(self, call: Call) -> Completion | None:
        """Before the upstream call: rewrite ``call.body``, or answer the call (no upstream)."""
        ...

    async def after(self, call: Call, result: CallResult) -> None:
        """After the call ended (any status)."""
        ...


def answer_text(content: str | None, tool_calls: Sequence[dict[str, Any]] | None) -> str | None:
    """The answer a grader sees: the content, then the tool calls as one JSON object
    ``{"tool_calls": [{"name", "arguments"}]}`` (arguments as the model wrote them), joined by a
    blank line. None when the reply has neither."""
    if not tool_calls:
        return content
    calls = [
        {
            "name": (c.get("function") or {}).get("name"),
            "arguments": (c.get("function") or {}).get("arguments"),
        }
        for c in tool_calls
    ]
    rendered = json.dumps({"tool_calls": calls}, ensure_ascii=False)
    return f"{content}\n\n{rendered}" if content else rendered


def _reply_message(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None, None
    message = choices[0].get("message")
    reason = choices[0].get("finish_reason")
    return (message if isinstance(message, dict) else None), (
        reason if isinstance(reason, str) else None
    )


def _reply_text(body: dict[str, Any]) -> str | None:
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message") or {}
    return answer_text(message.get("content"), message.get("tool_calls"))


def _error_status(error: ProviderError) -> int:
    if error.upstream_status in (400, 404, 413, 422):
        return error.upstream_status
    if error.upstream_status == 429 or isinstance(error, Deferred):
        return 429
    if error.upstream_status is None and "no reply within" in error.message:
        return 504
    return 502


class _Accumulator:
    """The answer a stream has carried so far: content and tool calls by index."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finished = False
        self.finish_reason: str | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.content.append(delta["content"])
            for part in delta.get("tool_calls") or ():
                call = self.calls.setdefault(
                    int(part.get("index", 0)), {"function": {"name": None, "arguments": ""}}
                )
                fn = part.get("function") or {}
                if part.get("id"):
                    call["id"] = part["id"]
                if fn.get("name"):
                    call["function"]["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call["function"]["arguments"] += fn["arguments"]
            if choice.get("finish_reason"):
                self.finished = True
                self.finish_reason = str(choice["finish_reason"])

    def text(self) -> str | None:
        calls = [self.calls[i] for i in sorted(self.calls)]
        return answer_text("".join(self.content) or None, calls)

    def message(self) -> dict[str, Any]:
        """The streamed answer as one assistant message (tool calls with their ids)."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.calls:
            message["tool_calls"] = [
                {"type": "function", **self.calls[i]} for i in sorted(self.calls)
            ]
        return message


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class CompletionStream(ChatStream):
    """A complete answer (a ``chat.completion`` body a stage gave) as a stream of
    ``chat.completion.chunk`` objects: the role with the content, the tool calls (whole, one
    chunk), the finish reason, then the usage-only chunk (OpenAI's stream shape, API reference
    "The chat completion chunk object")."""

    def __init__(self, completion: Completion) -> None:
        body = completion.body
        self.usage = completion.usage
        self.model = body.get("model")
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        base = {
            "id": body.get("id", "chatcmpl-stage"),
            "object": "chat.completion.chunk",
            "created": body.get("created", 0),
            "model": body.get("model", ""),
        }
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}]
        if message.get("tool_calls"):
            calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
            chunks.append(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}
                    ],
                }
            )
        reason = choice.get("finish_reason") or "stop"
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        chunks.append({**base, "choices": [], "usage": body.get("usage")})
        self._chunks = iter(chunks)

    async def __anext__(self) -> dict[str, Any]:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._chunks = iter(())


class Gateway:
    """Routes, calls and records gateway calls (see the module doc).

    Args:
        router: the data plane (snapshot, decisions, the batch writer).
        upstream: catalog model -> (adapter, model id to send).
        stages: pipeline stages, run in order (``before``) and in reverse (``after``).
        clock: monotonic seconds (``time.monotonic``): holds and timings.
    """

    def __init__(
        self,
        router: Router,
        upstream: Upstream,
        *,
        stages: Sequence[Stage] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._router = router
        self._upstream = upstream
        self._stages = list(stages)
        self._clock = clock
        self._held_until: dict[str, float] = {}
        self._recent_ids: OrderedDict[str, None] = OrderedDict()

    # ---- routing ----------------------------------------------------------------------------
    def start(self, request: GatewayCall, *, caller: str | None = None) -> Call:
        """Decide and build the call's chain: the chosen model's, or in shadow mode the named
        model's. The decision is written with the call's outcome (:meth:`Router.record_call`),
        so a call refused before any upstream call leaves no row.

        Raises:
            NoPolicy: no routing policy applied yet (503).
            UnknownTaskType: a task type the policy rejects (field ``model`` or
                ``x-tierwise-task-type``: where it was read; the API answers 400).
            Conflict: ``X-Tierwise-Request-Id`` repeats one this process served lately (the
                decision id derives from it, so a second call would lose its outcome; 409).
        """
        started = self._clock()
        try:
            decision, row = self._router.decide_call(
                request.task_type,
                request.input_tokens,
                request.has_tools,
                None,
                request_id=request.request_id,
                item_id=request.item_id,
                caller=caller,
                shadow=request.shadow_model is not None,
                at=utcnow(),
            )
        except UnknownTaskType as exc:  # named where the caller put it
            raise UnknownTaskType(exc.task_type, exc.known, field=request.task_type_field) from None
        structlog.contextvars.bind_contextvars(decision_id=decision.decision_id)
        if request.request_id is not None:
            if decision.decision_id in self._recent_ids:
                raise Conflict(
                    f"{REQUEST_ID_HEADER}: '{request.request_id}' was used by an earlier call; "
                    "send a new id for each call",
                    field=REQUEST_ID_HEADER,
                )
            self._recent_ids[decision.decision_id] = None
            if len(self._recent_ids) > RECENT_REQUEST_IDS:
                self._recent_ids.popitem(last=False)
        served = request.shadow_model or decision.model
        chain = self._router.snapshot.policy.fallback_chain(served)
        return Call(request, decision, row, dict(request.body), chain, started)

    def held(self, model: str) -> float:
        """Seconds ``model`` is still held by a ``Retry-After`` (0 when it is not)."""
        return max(0.0, self._held_until.get(model, 0.0) - self._clock())

    def _free(self, call: Call) -> list[str]:
        """The chain's models not held by a ``Retry-After``; each held one is noted as an
        attempt with status ``held`` (no upstream call), so the outcome says why it was
        skipped."""
        free: list[str] = []
        for model in call.chain:
            wait = self.held(model)
            if wait == 0.0:
                free.append(model)
                continue
            call.attempts.append(
                {
                    "model": model,
                    "status": "held",
                    "upstream_status": None,
                    "error": f"held by Retry-After for {wait:.3f} s more",
                    "latency_ms": 0.0,
                }
            )
        return free

    def _failed(self, call: Call, model: str, error: ProviderError, took_s: float) -> None:
        call.attempts.append(
            {
                "model": model,
                "status": "error",
                "upstream_status": error.upstream_status,
                "error": error.message[:500],
                "latency_ms": round(took_s * 1000, 3),
            }
        )
        if error.retry_after_s is not None and error.retry_after_s > 0:
            until = self._clock() + error.retry_after_s
            self._held_until[model] = max(self._held_until.get(model, 0.0), until)

    def _exhausted(self, call: Call, last: ProviderError | None) -> UpstreamFailed:
        if last is None:  # every model of the chain is held
            wait = min(self.held(m) for m in call.chain)
            return UpstreamFailed(
                f"every model of the chain ({', '.join(call.chain)}) is rate-limited for "
                f"{wait:.1f} s more",
                status=429,
                retry_after_s=wait,
            )
        tried = call.called
        return UpstreamFailed(
            f"{last.message} (after {len(tried)} attempt(s): {', '.join(tried)})",
            status=_error_status(last),
            retry_after_s=last.retry_after_s,
        )

    async def _attempts(
        self, call: Call, send: Callable[[Provider, dict[str, Any]], Any]
    ) -> tuple[str, Any]:
        """Try the chain's free models in order with ``send(adapter, body)``; the first that
        answers wins. A permanent error ends the chain at once."""
        last: ProviderError | None = None
        for model in self._free(call):
            adapter, api_model = self._upstream(model)
            body = {**call.body, "model": api_model}
            began = self._clock()
            try:
                if call.flex and adapter.name == "openai":
                    reply = await self._flex(call, model, adapter, body, send)
                else:
                    reply = await send(adapter, body)
            except InvalidInput as exc:
                # The request cannot be said to this upstream (n > 1 to Anthropic): the caller's
                # to fix. Recorded only when an earlier attempt already reached an upstream.
                call.attempts.append(
                    {
                        "model": model,
                        "status": "refused",
                        "upstream_status": None,
                        "error": exc.message[:500],
                        "latency_ms": 0.0,
                    }
                )
                if call.called:
                    self._record(call, CallResult("error", call.last_model, None, None), None)
                raise
            except ProviderError as exc:
                took = self._clock() - began
                call.upstream_s += took
                self._failed(call, model, exc, took)
                last = exc
                if not exc.transient:
                    break
                log.info("gateway: %s failed (%s); trying the next model", model, exc.message)
                continue
            took = self._clock() - began
            call.upstream_s += took
            call.attempts.append(
                {
                    "model": model,
                    "status": "ok",
                    "upstream_status": 200,
                    "error": None,
                    "latency_ms": round(took * 1000, 3),
                }
            )
            return model, reply
        raise self._exhausted(call, last)

    async def _flex(
        self,
        call: Call,
        model: str,
        adapter: Provider,
        body: dict[str, Any],
        send: Callable[[Provider, dict[str, Any]], Any],
    ) -> Any:
        """One call on OpenAI's flex processing (``service_tier: "flex"``, OpenAI "Flex
        processing": batch prices, 429 ``resource_unavailable`` when out of capacity). A flex
        429 (or a 400 naming ``service_tier``: a model flex does not serve) is noted as an
        attempt (status ``flex_unavailable``, no ``Retry-After`` hold: the model is not out of
        real-time capacity) and the same model is asked again in real time. Only a reply that
        says ``service_tier: "flex"`` is booked at the batch discount.

        Raises:
            ProviderError | InvalidInput: as ``send``, from the real-time call.
        """
        began = self._clock()
        try:
            reply = await send(adapter, {**body, "service_tier": "flex"})
        except ProviderError as exc:
            # 429: no flex capacity; 400 naming service_tier: a model flex does not serve.
            unflexed = exc.upstream_status == 400 and "service_tier" in exc.message
            if exc.upstream_status != 429 and not unflexed:
                raise
            took = self._clock() - began  # counted in the attempt's time by the caller
            call.attempts.append(
                {
                    "model": model,
                    "status": "flex_unavailable",
                    "upstream_status": 429,
                    "error": exc.message[:500],
                    "latency_ms": round(took * 1000, 3),
                }
            )
            return await send(adapter, body)
        # Booked at the batch price only when the reply says it was served flex (a stream's
        # tier is not read: it is booked at the real-time price, never below what was billed).
        tier = reply.body.get("service_tier") if isinstance(reply, Completion) else None
        call.flex_served = tier == "flex"
        return reply

    @staticmethod
    def upstream_calls(call: Call) -> int:
        """Upstream calls made so far (held models are skipped, not called)."""
        return len(call.called)

    def overhead_ms(self, call: Call) -> float:
        """What tierwise added so far: the call's time less its upstream time, ms."""
        return max(0.0, (self._clock() - call.started - call.upstream_s) * 1000)

    def _record(self, call: Call, result: CallResult, ttft_ms: float | None) -> None:
        if call.recorded:
            return
        call.recorded = True
        decision = call.decision
        answer_model = (
            decision.model
            if call.request.shadow_model is not None and decision.model != result.served_model
            else None
        )
        took_s = self._clock() - call.started
        ttft_s = None if ttft_ms is None else ttft_ms / 1000
        self._router.metrics.gateway_call(result.status, took_s, ttft_s, call.attempts)
        report = OutcomeReport(
            decision_id=decision.decision_id,
            served_model=result.served_model,
            status=result.status,
            latency_ms=round(took_s * 1000, 3),
            usage=result.usage,
            input_messages=call.request.messages,
            output_text=result.text,
        )
        answered_by_stage = any(result.served_model == stage.name for stage in self._stages)
        self._router.record_call(
            decision,
            call.decision_row,
            report,
            attempts=call.attempts,
            ttft_ms=ttft_ms,
            item_id=call.request.item_id,
            answer_model=answer_model,
            cost_nusd=call.answer_cost_nusd if answered_by_stage else None,
            discounted=call.flex_served and not answered_by_stage,
        )

    async def _before(self, call: Call) -> tuple[str, Completion] | None:
        for stage in self._stages:
            answer = await stage.before(call)
            if answer is not None:
                call.state["answered_by"] = stage.name
                return stage.name, answer
        return None

    async def _after(self, call: Call, result: CallResult) -> None:
        for stage in reversed(self._stages):
            try:
                await stage.after(call, result)
            except Exception:
                log.exception("gateway stage %s failed after a call", stage.name)

    # ---- non-streaming ----------------------------------------------------------------------
    async def complete(self, call: Call) -> Completion:
        """Answer ``call`` in one reply, recording its outcome whatever happens.

        Raises:
            UpstreamFailed: no model of the chain answered (the outcome is recorded as error).
            InvalidInput: the upstream adapter cannot express the request (nothing sent).
        """
        answered = await self._before(call)
        try:
            if answered is not None:
                served, completion = answered
            else:

                async def send(adapter: Provider, body: dict[str, Any]) -> Completion:
                    return await adapter.chat_completion(body)

                served, completion = await self._attempts(call, send)
        except UpstreamFailed:
            result = CallResult("error", call.last_model, None, None)
            self._record(call, result, None)
            await self._after(call, result)
            raise
        message, finish_reason = _reply_message(completion.body)
        result = CallResult(
            "ok",
            served,
            completion.usage,
            _reply_text(completion.body),
            message,
            finish_reason,
        )
        self._record(call, result, None)
        await self._after(call, result)
        return completion

    # ---- streaming --------------------------------------------------------------------------
    async def open_stream(self, call: Call) -> tuple[str, ChatStream]:
        """Run the stages' ``before`` (a rewritten body is what streams), then open the
        upstream stream along the chain (errors before the first byte fall back), unless a
        stage answers the call: its answer is then streamed (:class:`CompletionStream`) and
        the stage's name is the served model.

        Raises:
            UpstreamFailed: no model of the chain accepted the call (the outcome is recorded).
        """
        answered = await self._before(call)
        if answered is not None:
            name, completion = answered
            return name, CompletionStream(completion)
        call.body = {
            **call.body,
            "stream": True,
            "stream_options": {**(call.body.get("stream_options") or {}), "include_usage": True},
        }

        async def send(adapter: Provider, body: dict[str, Any]) -> ChatStream:
            return await adapter.open_stream(body)

        try:
            served, stream = await self._attempts(call, send)
        except UpstreamFailed:
            result = CallResult("error", call.last_model, None, None)
            self._record(call, result, None)
            await self._after(call, result)
            raise
        return served, stream

    async def settle(self, call: Call, served: str, stream: ChatStream) -> None:
        """After the response: a stream whose relay never ran (the caller left before its body
        started) is closed and recorded as ``cancelled``; otherwise nothing (the relay did)."""
        if call.recorded:
            return
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            usage = stream.usage or {
                "prompt_tokens": call.request.input_tokens,
                "completion_tokens": 0,
                "estimated": True,
            }
            result = CallResult("cancelled", served, usage, None)
            self._record(call, result, None)
            await self._after(call, result)

    async def relay(self, call: Call, served: str, stream: ChatStream) -> AsyncIterator[bytes]:
        """The stream as server-sent events, chunk by chunk as they arrive, then ``[DONE]``.
        The usage-only final chunk (``choices: []``) reaches the caller only when it asked
        (``stream_options.include_usage``). An upstream error mid-stream is relayed as one
        ``data: {"error": ...}`` event and recorded as an error outcome; a caller that goes
        away closes the upstream stream and is recorded as ``cancelled``. Either way the usage
        is the upstream's when it sent it, else the offline estimate of what was sent and
        received (``{"prompt_tokens", "completion_tokens", "estimated": true}``); partial text
        is never graded."""
        seen = _Accumulator()
        ttft_ms: float | None = None
        status = "cancelled"
        include_usage = call.request.include_usage
        try:
            try:
                async for chunk in stream:
                    if ttft_ms is None:
                        ttft_ms = round((self._clock() - call.started) * 1000, 3)
                    seen.add(chunk)
                    if not include_usage:
                        if not chunk.get("choices"):
                            continue
                        if "usage" in chunk and chunk["usage"] is None:
                            chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    yield sse(chunk)
                if not seen.finished:
                    raise ProviderError(
                        "the upstream stream ended without a finish reason", transient=True
                    )
            except ProviderError:
                raise
            except Exception as exc:  # anything else the SDK let through: still an error event
                log.exception("gateway: %s stream failed", served)
                raise ProviderError(f"{type(exc).__name__}: {exc}", transient=True) from exc
            status = "ok"
            yield SSE_DONE
        except ProviderError as exc:
            status = "error"
            log.info("gateway: %s failed mid-stream: %s", served, exc.message)
            yield sse(
                {"error": error_body("upstream_error", exc.message, None, _error_status(exc))}
            )
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                usage = stream.usage
                if usage is None:
                    usage = {
                        "prompt_tokens": call.request.input_tokens,
                        "completion_tokens": estimate_text_tokens("".join(seen.content)),
                        "estimated": True,
                    }
                ok = status == "ok"
                result = CallResult(
                    status,
                    served,
                    usage,
                    seen.text() if ok else None,
                    seen.message() if ok else None,
                    seen.finish_reason if ok else None,
                )
                self._record(call, result, ttft_ms)
                await self._after(call, result)
