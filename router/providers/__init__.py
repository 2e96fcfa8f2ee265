"""Reference-model providers: the interface, the adapters, and construction from settings.

Exception tree (all are ``router.errors.TierwiseError``)::

    ProviderError (502, "provider_error")      the call failed; ``transient`` says retry later
    +-- Deferred (503, "deferred")             a rate-limit wait would exceed the wait budget
    +-- ReplayMiss (502, "replay_miss")        the replay provider has no recorded answer

Adapters: :class:`OpenAIProvider` (Chat Completions; any OpenAI-compatible server),
:class:`AnthropicProvider` (Messages), :class:`ReplayProvider` (recorded answers, offline).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr

from router.errors import InvalidInput
from router.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_BASE_URL
from router.providers.anthropic import AnthropicProvider
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    Deferred,
    FinishReason,
    Provider,
    ProviderError,
    ReplayMiss,
    WaitBudget,
    retry_after_s,
)
from router.providers.openai import DEFAULT_BASE_URL as OPENAI_BASE_URL
from router.providers.openai import OpenAIProvider
from router.providers.replay import ReplayProvider

__all__ = [
    "AnthropicProvider",
    "ChatRequest",
    "ChatResponse",
    "Deferred",
    "FinishReason",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "ReplayMiss",
    "ReplayProvider",
    "WaitBudget",
    "provider_from_settings",
    "retry_after_s",
]

LIVE_PROVIDERS = ("openai", "anthropic")


class ProviderSettings(Protocol):
    """The settings a live provider is built from (``tierwise.settings.Settings`` has them;
    evaluator never imports the composition root, so this states the shape instead)."""

    @property
    def reference_provider(self) -> str: ...
    @property
    def openai_api_key(self) -> SecretStr | None: ...
    @property
    def openai_base_url(self) -> str | None: ...
    @property
    def anthropic_api_key(self) -> SecretStr | None: ...
    @property
    def anthropic_base_url(self) -> str | None: ...
    @property
    def openai_concurrency(self) -> int: ...
    @property
    def anthropic_concurrency(self) -> int: ...
    @property
    def provider_max_retries(self) -> int: ...
    @property
    def provider_timeout_s(self) -> float: ...
    @property
    def grading_budget_s(self) -> float: ...


def provider_from_settings(settings: ProviderSettings) -> Provider:
    """The live provider ``settings.reference_provider`` names (``openai`` | ``anthropic``).

    Build it inside the app's lifespan (it opens an HTTP client) and ``aclose`` it there. An
    OpenAI-compatible server without keys (``openai_base_url`` set, no key) gets a placeholder
    key, since the SDK requires one. ``replay`` is not built here: it needs the held-out sets
    (``evaluator.service.default_replay_env``).

    Raises:
        InvalidInput: an unknown provider name, or a missing API key (``field`` names the
            setting).
    """
    kind = settings.reference_provider
    if kind == "openai":
        key = settings.openai_api_key
        if key is None and settings.openai_base_url is None:
            raise InvalidInput(
                "reference_provider is openai but no openai_api_key is set",
                field="openai_api_key",
            )
        return OpenAIProvider(
            api_key=key or SecretStr("unused"),
            base_url=settings.openai_base_url or OPENAI_BASE_URL,
            concurrency=settings.openai_concurrency,
            max_retries=settings.provider_max_retries,
            timeout_s=settings.provider_timeout_s,
            budget_s=settings.grading_budget_s,
        )
    if kind == "anthropic":
        if settings.anthropic_api_key is None:
            raise InvalidInput(
                "reference_provider is anthropic but no anthropic_api_key is set",
                field="anthropic_api_key",
            )
        return AnthropicProvider(
            api_key=settings.anthropic_api_key,
            base_url=settings.anthropic_base_url or ANTHROPIC_BASE_URL,
            concurrency=settings.anthropic_concurrency,
            max_retries=settings.provider_max_retries,
            timeout_s=settings.provider_timeout_s,
            budget_s=settings.grading_budget_s,
        )
    raise InvalidInput(
        f"reference_provider {kind!r} is not a live provider (one of {', '.join(LIVE_PROVIDERS)})",
        field="reference_provider",
    )
