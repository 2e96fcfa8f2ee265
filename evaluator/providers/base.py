"""The provider interface: one chat call to a reference model, normalised.

Exception tree (all are ``router.errors.TierwiseError``)::

    ProviderError (502, "provider_error")      the call failed; ``transient`` says retry later
    +-- Deferred (503, "deferred")             a rate-limit wait would exceed the job's budget
    +-- ReplayMiss (502, "replay_miss")        the replay provider has no recorded answer
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

from router.errors import TierwiseError
from router.pricing import Usage

FinishReason = Literal["stop", "length", "refusal", "other"]


class ProviderError(TierwiseError):
    code = "provider_error"
    status = 502

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Deferred(ProviderError):
    """Retry the item in the next run: waiting now would overrun the job (field case P1)."""

    code = "deferred"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, transient=True)
        self.retry_after_s = retry_after_s


class ReplayMiss(ProviderError):
    code = "replay_miss"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat call. ``messages`` are ``{"role", "content"}`` dicts; ``max_tokens`` caps output."""

    model: str
    messages: list[dict[str, Any]]
    system: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.0


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A normalised reply: text, why it stopped, and usage in tokens."""

    text: str
    model: str
    finish_reason: FinishReason
    usage: Usage
    raw: dict[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """A reference-model client. One abstract method; adapters map SDK shapes to ours."""

    name: str = "provider"

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one chat call.

        Raises:
            ProviderError: the call failed after the SDK's own retries (``transient`` set for
                429/5xx/timeouts); Deferred when a rate-limit wait exceeds the budget.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
