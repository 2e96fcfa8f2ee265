"""The replay provider: answers reference calls from recorded outputs in held-out sets.

This is how tierwise runs offline. It is content-addressed, like a cache in front of a real
model: an answer call is looked up by (model, input messages); a judge call by the exact judge
prompt text, which the graders rebuild from the recorded template (MT-Bench's judge prompts), so
a recorded verdict is returned only for the very prompt the recorded judge saw. Usage is
estimated from the text (``router.tokens``); providers' real usage is not in the recordings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from router.pricing import Usage
from router.providers.base import ChatRequest, ChatResponse, Provider, ReplayMiss
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
        self._judgments: dict[str, str] = {
            _key("judge", j.prompt): j.judgment for j in judgments
        }

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
