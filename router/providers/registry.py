"""The provider registry: which adapter answers a catalog model, and with which model id.

Every call names a model by its catalog name (``claude-3-5-sonnet``). The registry looks the
model up in the current catalog (a callable, so it always reads the serving snapshot's), picks
the adapter its ``provider`` field names, and sends the catalog's ``api_model``
(``claude-3-5-sonnet-20241022``) upstream. A policy whose ladder mixes OpenAI and Anthropic
models therefore sends every judge call, reference answer and shadow probe to its own model's
API.

Modes (``reference_provider`` setting): ``catalog`` picks per model as above; a provider name
(``openai``, ``anthropic`` or a key of ``providers``) sends every model to that one adapter
(an aggregator such as OpenRouter serves them all); ``replay`` answers from recordings and is
built by the evaluator, which owns the held-out sets (:class:`ProviderRegistry` takes it as
``force``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from router.errors import InvalidInput
from router.policy import ModelPrice
from router.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_BASE_URL
from router.providers.anthropic import AnthropicProvider
from router.providers.base import (
    ChatRequest,
    ChatResponse,
    ChatStream,
    Completion,
    Provider,
    ProviderError,
)
from router.providers.batch import BatchItem, BatchPoll
from router.providers.openai import DEFAULT_BASE_URL as OPENAI_BASE_URL
from router.providers.openai import OpenAIProvider

AdapterKind = Literal["openai", "anthropic"]
BUILTIN = ("openai", "anthropic")


class ProviderConfig(BaseModel):
    """One upstream beyond the built-in ``openai`` and ``anthropic``: an OpenAI-compatible
    server (Groq, Together, vLLM, Ollama, ...) or a second Anthropic account, named by the
    catalog's ``provider`` field. ``concurrency`` is calls in flight at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AdapterKind = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    concurrency: int = Field(default=8, ge=1)


class ProviderSettings(Protocol):
    """The settings adapters are built from (``tierwise.settings.Settings`` has them; the
    data plane never imports the composition root, so this states the shape instead)."""

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
    def providers(self) -> Mapping[str, ProviderConfig]: ...
    @property
    def provider_max_retries(self) -> int: ...
    @property
    def provider_timeout_s(self) -> float: ...
    @property
    def grading_budget_s(self) -> float: ...


def _config_of(settings: ProviderSettings, name: str) -> tuple[ProviderConfig, str] | None:
    """The configuration of provider ``name`` and the setting that holds its key, or None
    when nothing configures it (no key, and for OpenAI-compatible servers no base URL)."""
    if name == "openai":
        if settings.openai_api_key is None and settings.openai_base_url is None:
            return None
        config = ProviderConfig(
            kind="openai",
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            concurrency=settings.openai_concurrency,
        )
        return config, "openai_api_key"
    if name == "anthropic":
        if settings.anthropic_api_key is None:
            return None
        config = ProviderConfig(
            kind="anthropic",
            base_url=settings.anthropic_base_url,
            api_key=settings.anthropic_api_key,
            concurrency=settings.anthropic_concurrency,
        )
        return config, "anthropic_api_key"
    extra = settings.providers.get(name)
    return None if extra is None else (extra, f"providers.{name}.api_key")


def build_adapter(
    config: ProviderConfig, settings: ProviderSettings, *, key_field: str
) -> Provider:
    """An SDK adapter for ``config``. It opens an HTTP client: build it inside the app's
    lifespan and ``aclose`` it there. An OpenAI-compatible server without a key gets a
    placeholder key (the SDK requires one).

    Raises:
        InvalidInput: an Anthropic upstream without a key (``field`` = ``key_field``).
    """
    if config.kind == "anthropic":
        if config.api_key is None:
            raise InvalidInput("an anthropic provider needs an API key", field=key_field)
        return AnthropicProvider(
            api_key=config.api_key,
            base_url=config.base_url or ANTHROPIC_BASE_URL,
            concurrency=config.concurrency,
            max_retries=settings.provider_max_retries,
            timeout_s=settings.provider_timeout_s,
            budget_s=settings.grading_budget_s,
        )
    return OpenAIProvider(
        api_key=config.api_key or SecretStr("unused"),
        base_url=config.base_url or OPENAI_BASE_URL,
        concurrency=config.concurrency,
        max_retries=settings.provider_max_retries,
        timeout_s=settings.provider_timeout_s,
        budget_s=settings.grading_budget_s,
    )


def provider_from_settings(settings: ProviderSettings) -> Provider:
    """The one adapter ``settings.reference_provider`` names (``openai``, ``anthropic`` or a
    key of ``settings.providers``), for the mode that sends every model to it.

    Raises:
        InvalidInput: an unknown provider name, or one without a key or base URL (``field``
            names the setting).
    """
    name = settings.reference_provider
    if name not in BUILTIN and name not in settings.providers:
        known = ", ".join(["catalog", *BUILTIN, *settings.providers])
        raise InvalidInput(
            f"reference_provider {name!r} is not a live provider (one of {known})",
            field="reference_provider",
        )
    found = _config_of(settings, name)
    if found is None:
        key = f"{name}_api_key"
        raise InvalidInput(f"reference_provider is {name} but no {key} is set", field=key)
    config, key_field = found
    return build_adapter(config, settings, key_field=key_field)


def adapters_from_settings(settings: ProviderSettings) -> dict[str, Provider]:
    """One adapter per configured provider, by name: ``openai`` (a key or a base URL set),
    ``anthropic`` (a key set) and every entry of ``settings.providers``.

    Raises:
        InvalidInput: ``providers`` redefines a built-in name, or an entry cannot be built.
    """
    for name in settings.providers:
        if name in BUILTIN:
            raise InvalidInput(
                f"providers.{name}: configure the built-in {name} provider with "
                f"{name}_api_key / {name}_base_url",
                field=f"providers.{name}",
            )
    adapters: dict[str, Provider] = {}
    for name in (*BUILTIN, *settings.providers):
        found = _config_of(settings, name)
        if found is not None:
            config, key_field = found
            adapters[name] = build_adapter(config, settings, key_field=key_field)
    return adapters


class _AtApiId(Provider):
    """An adapter bound to one model: the request's catalog name becomes its API id."""

    def __init__(self, adapter: Provider, api_model: str) -> None:
        self.adapter = adapter
        self.api_model = api_model
        self.name = adapter.name
        self.supports_structured_output = adapter.supports_structured_output
        self.batch_limits = adapter.batch_limits

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.adapter.complete(replace(request, model=self.api_model))

    def batch_size_of(self, item: BatchItem) -> int:
        return self.adapter.batch_size_of((item[0], replace(item[1], model=self.api_model)))

    async def submit_batch(self, items: Sequence[BatchItem]) -> str:
        bound = [(c, replace(r, model=self.api_model)) for c, r in items]
        return await self.adapter.submit_batch(bound)

    async def poll_batch(self, batch_id: str, expected: Collection[str]) -> BatchPoll:
        return await self.adapter.poll_batch(batch_id, expected)


class _Unconfigured(Provider):
    """Stands for a provider nobody configured: every call fails, naming what to set."""

    def __init__(self, model: str, provider: str | None) -> None:
        self._message = (
            f"model '{model}' is not in the catalog"
            if provider is None
            else f"no provider '{provider}' is configured for model '{model}': set "
            + (
                f"TIERWISE_{provider.upper()}_API_KEY"
                if provider in BUILTIN
                else f"TIERWISE_PROVIDERS with a '{provider}' entry"
            )
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        raise ProviderError(self._message, transient=False)

    async def chat_completion(self, body: Mapping[str, Any]) -> Completion:
        raise ProviderError(self._message, transient=False)

    async def open_stream(self, body: Mapping[str, Any]) -> ChatStream:
        raise ProviderError(self._message, transient=False)


class ProviderRegistry:
    """Adapters by provider name, resolved per catalog model.

    Args:
        adapters: provider name -> adapter (``adapters_from_settings``).
        catalog: returns the current catalog, catalog name -> :class:`ModelPrice` (the serving
            snapshot's), read on every :meth:`for_model`.
        force: when set, every model goes to this adapter (one aggregator upstream, or the
            replay provider). Its ``uses_api_ids`` says whether catalog ids are translated.
    """

    def __init__(
        self,
        adapters: Mapping[str, Provider],
        catalog: Callable[[], Mapping[str, ModelPrice]],
        *,
        force: Provider | None = None,
    ) -> None:
        self._adapters = dict(adapters)
        self._catalog = catalog
        self._force = force
        self._bound: dict[tuple[int, str], Provider] = {}

    def for_model(self, model: str) -> Provider:
        """The provider that answers ``model`` (a catalog name), sending the catalog's
        ``api_model`` upstream when it has one. A model whose provider is not configured gets
        a provider whose calls raise a permanent :class:`ProviderError` naming the setting."""
        entry = self._catalog().get(model)
        if self._force is not None:
            adapter = self._force
        else:
            adapter_or_none = self._adapters.get(entry.provider) if entry is not None else None
            if adapter_or_none is None:
                return _Unconfigured(model, entry.provider if entry is not None else None)
            adapter = adapter_or_none
        api_model = entry.api_model if entry is not None else None
        if api_model is None or api_model == model or not adapter.uses_api_ids:
            return adapter
        key = (id(adapter), api_model)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = _AtApiId(adapter, api_model)
        return bound

    def adapter_for(self, model: str) -> tuple[Provider, str]:
        """The adapter that serves ``model`` (a catalog name) and the model id to send it: the
        catalog's ``api_model`` (else the name) for a live API, the catalog name for one keyed
        by it (``uses_api_ids`` False: replay). A model whose provider is not configured gets
        an adapter whose calls raise a permanent :class:`ProviderError` naming the setting."""
        entry = self._catalog().get(model)
        adapter = self._force
        if adapter is None:
            adapter = self._adapters.get(entry.provider) if entry is not None else None
            if adapter is None:
                return _Unconfigured(model, entry.provider if entry is not None else None), model
        api_model = entry.api_model if entry is not None else None
        if api_model is None or not adapter.uses_api_ids:
            return adapter, model
        return adapter, api_model

    def unconfigured(self, catalog: Mapping[str, ModelPrice]) -> dict[str, list[str]]:
        """Providers named in ``catalog`` with no adapter -> their models (empty when forced)."""
        if self._force is not None:
            return {}
        missing: dict[str, list[str]] = {}
        for price in catalog.values():
            if price.provider not in self._adapters:
                missing.setdefault(price.provider, []).append(price.name)
        return missing

    async def aclose(self) -> None:
        """Close every adapter's connections."""
        for adapter in {id(a): a for a in (*self._adapters.values(), self._force) if a}.values():
            await adapter.aclose()
