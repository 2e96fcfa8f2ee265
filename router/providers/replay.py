"""The replay provider: answers reference calls from recorded outputs in held-out sets.

This is how tierwise runs offline. It is content-addressed, like a cache in front of a real
model: an answer call is looked up by (model, input messages); a judge call by the exact judge
prompt text, which the graders rebuild from the recorded template (MT-Bench's judge prompts), so
a recorded verdict is returned only for the very prompt the recorded judge saw. Usage is
estimated from the text (``router.tokens``); providers' real usage is not in the recordings.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.pricing import Usage
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    ChatStream,
    Completion,
    Provider,
    ProviderError,
    ReplayMiss,
)
from router.providers.batch import (
    BatchItem,
    BatchItemError,
    BatchLimits,
    BatchPoll,
    BodyItem,
    ChatBatchPoll,
)
from router.tokens import estimate_message_tokens, estimate_text_tokens, text_of


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _canonical(messages: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(m.get("role")), text_of(m.get("content"))) for m in messages]


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """One recorded reply: ``model`` (catalog name) answered ``messages`` with ``text``."""

    model: str
    messages: list[dict[str, Any]]
    text: str


_STREAM_PIECE_CHARS = 64
"""A streamed replay answer comes in pieces of this many characters."""


def _gateway_reply(model: str, messages: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object answering ``messages`` with ``text``; usage is the
    offline estimate (:mod:`router.tokens`), as for :meth:`ReplayProvider.complete`."""
    prompt = estimate_message_tokens(messages)
    completion = estimate_text_tokens(text)
    return {
        "id": "chatcmpl-replay-" + _key("reply", model, _canonical(messages))[:24],
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class _ReplayStream(ChatStream):
    """A recorded answer streamed in pieces, then a usage-only chunk (``choices: []``)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        text = reply["choices"][0]["message"]["content"]
        base = {k: reply[k] for k in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk"
        size = _STREAM_PIECE_CHARS
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": p}}]}
            if i == 0
            else {**base, "choices": [{"index": 0, "delta": {"content": p}}]}
            for i, p in enumerate(pieces)
        ]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({**base, "choices": [], "usage": reply["usage"]})
        self._chunks = iter(chunks)
        self._usage = reply["usage"]
        self.model = reply["model"]

    async def __anext__(self) -> dict[str, Any]:
        chunk = next(self._chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        if not chunk["choices"]:
            self.usage = self._usage
        return chunk

    async def aclose(self) -> None:
        self._chunks = iter(())


@dataclass(frozen=True, slots=True)
class RecordedJudgment:
    """One recorded judge call: the exact user prompt the judge saw and its judgment text."""

    prompt: str
    judgment: str


class ReplayProvider(Provider):
    """Answers from recordings; raises ReplayMiss for anything it has not seen.

    The data plane knows nothing of held-out sets: the evaluator turns its sets into
    :class:`RecordedAnswer` and :class:`RecordedJudgment` rows
    (``evaluator.datasets.replay_provider``).
    """

    name = "replay"
    uses_api_ids = False
    # Recorded judgments are MT-Bench free text, looked up by the exact prompt: graders must send
    # the plain template here, never a schema request (which would change the prompt).
    supports_structured_output = False

    def __init__(
        self,
        answers: Iterable[RecordedAnswer] = (),
        judgments: Iterable[RecordedJudgment] = (),
    ) -> None:
        self._answers: dict[str, str] = {
            _key("answer", a.model, _canonical(a.messages)): a.text for a in answers
        }
        self._judgments: dict[str, str] = {_key("judge", j.prompt): j.judgment for j in judgments}
        self._batches: dict[str, list[BatchItem]] = {}
        self._chat_batches: dict[str, list[BodyItem]] = {}
        self._batch_ids = itertools.count(1)

    @property
    def size(self) -> tuple[int, int]:
        """(recorded answers, recorded judgments)."""
        return len(self._answers), len(self._judgments)

    def lookup(self, request: ChatRequest) -> str | None:
        """The recorded reply to ``request``: a judgment for its last user message's exact text,
        else the recorded answer of ``request.model`` to these messages."""
        if request.messages:
            judged = self._judgments.get(
                _key("judge", text_of(request.messages[-1].get("content")))
            )
            if judged is not None:
                return judged
        return self._answers.get(_key("answer", request.model, _canonical(request.messages)))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text = self.lookup(request)
        if text is None:
            raise ReplayMiss(f"no recorded reply of {request.model} to this prompt")
        prompt = list(request.messages)
        if request.system:
            prompt = [{"role": "system", "content": request.system}, *prompt]
        usage = Usage(
            input_tokens=estimate_message_tokens(prompt), output_tokens=estimate_text_tokens(text)
        )
        return ChatResponse(text=text, model=request.model, finish_reason="stop", usage=usage)

    # ---- batch mode: offline, every batch has ended by its first poll ----

    batch_limits = BatchLimits(100_000, 256 * 1024 * 1024)

    async def submit_batch(self, items: Sequence[BatchItem]) -> str:
        """Keep ``items`` in memory under a new id ``replay-batch-<n>`` (nothing is answered
        yet: that happens on the first :meth:`poll_batch`, as a provider would)."""
        batch_id = f"replay-batch-{next(self._batch_ids)}"
        self._batches[batch_id] = list(items)
        return batch_id

    async def poll_batch(self, batch_id: str, expected: Collection[str]) -> BatchPoll:
        """The batch has ended: each item answered as :meth:`complete` answers it; a missing
        recording is a permanent ``errored`` item. Only ``expected`` ids are returned.

        Raises:
            ProviderError: an unknown batch id (permanent: this process never made it).
        """
        items = self._batches.get(batch_id)
        if items is None:
            raise ProviderError(f"replay: no batch {batch_id}", transient=False)
        results: dict[str, ChatResponse | BatchItemError] = {}
        for custom_id, request in items:
            if custom_id not in expected:
                continue
            try:
                results[custom_id] = await self.complete(request)
            except ReplayMiss as exc:
                results[custom_id] = BatchItemError("errored", str(exc))
        return BatchPoll(True, "ended", results)

    async def submit_chat_batch(self, items: Sequence[BodyItem]) -> str:
        """Keep passed-through bodies under a new id, as :meth:`submit_batch` (the batch
        lane's replay)."""
        batch_id = f"replay-batch-{next(self._batch_ids)}"
        self._chat_batches[batch_id] = list(items)
        return batch_id

    async def poll_chat_batch(self, batch_id: str, expected: Collection[str]) -> ChatBatchPoll:
        """The batch has ended: each body answered as :meth:`chat_completion` answers it; a
        missing recording is a permanent ``errored`` item.

        Raises:
            ProviderError: an unknown batch id (permanent: this process never made it).
        """
        items = self._chat_batches.get(batch_id)
        if items is None:
            raise ProviderError(f"replay: no batch {batch_id}", transient=False)
        results: dict[str, Completion | BatchItemError] = {}
        for custom_id, body in items:
            if custom_id not in expected:
                continue
            try:
                results[custom_id] = await self.chat_completion(body)
            except ReplayMiss as exc:
                results[custom_id] = BatchItemError("errored", str(exc))
        return ChatBatchPoll(True, "ended", results)

    def _gateway_lookup(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = str(body["model"])
        messages = list(body["messages"])
        text = self._answers.get(_key("answer", model, _canonical(messages)))
        if text is None:
            raise ReplayMiss(f"no recorded reply of {model} to this prompt")
        return _gateway_reply(model, messages, text)

    async def chat_completion(self, body: Mapping[str, Any]) -> Completion:
        """The recorded answer of ``body["model"]`` (a catalog name) to ``body["messages"]``,
        as an OpenAI ``chat.completion`` with estimated usage. Tools and other parameters are
        not replayed (the recordings have none).

        Raises:
            ReplayMiss: nothing recorded for this model and these messages (permanent).
        """
        reply = self._gateway_lookup(body)
        return Completion(body=reply, usage=reply["usage"])

    async def open_stream(self, body: Mapping[str, Any]) -> ChatStream:
        """The same answer as :meth:`chat_completion`, streamed in 64-character pieces with a
        final usage-only chunk.

        Raises:
            ReplayMiss: as :meth:`chat_completion`.
        """
        return _ReplayStream(self._gateway_lookup(body))
