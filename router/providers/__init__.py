"""Model providers: the interface, the adapters, and the registry that picks one per model.

Exception tree (all are ``router.errors.TierwiseError``)::

    ProviderError (502, "provider_error")      the call failed; ``transient`` says retry later
    +-- Deferred (503, "deferred")             a rate-limit wait would exceed the wait budget
    +-- ReplayMiss (502, "replay_miss")        the replay provider has no recorded answer

Adapters: :class:`OpenAIProvider` (Chat Completions; any OpenAI-compatible server),
:class:`AnthropicProvider` (Messages), :class:`ReplayProvider` (recorded answers, offline).
:class:`ProviderRegistry` sends each catalog model to the adapter its ``provider`` names, with
the catalog's ``api_model`` id. The wait budget (:class:`WaitBudget`, :class:`Deferred`) caps how
long one call may wait on rate-limit hints; the caller decides what a deferral means (the
grading job retries the sample in a later run).
"""

from __future__ import annotations

from router.providers.anthropic import AnthropicProvider
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    ChatStream,
    Completion,
    Deferred,
    FinishReason,
    Provider,
    ProviderError,
    ReplayMiss,
    WaitBudget,
    retry_after_s,
)
from router.providers.openai import OpenAIProvider
from router.providers.registry import (
    ProviderConfig,
    ProviderRegistry,
    ProviderSettings,
    adapters_from_settings,
    provider_from_settings,
)
from router.providers.replay import RecordedAnswer, RecordedJudgment, ReplayProvider

__all__ = [
    "AnthropicProvider",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "Completion",
    "Deferred",
    "FinishReason",
    "OpenAIProvider",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderRegistry",
    "ProviderSettings",
    "RecordedAnswer",
    "RecordedJudgment",
    "ReplayMiss",
    "ReplayProvider",
    "WaitBudget",
    "adapters_from_settings",
    "provider_from_settings",
    "retry_after_s",
]
