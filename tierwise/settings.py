"""All configuration, in one pydantic-settings class. No other module reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from router.providers import ProviderConfig


class Settings(BaseSettings):
    """tierwise settings; every field can be set as ``TIERWISE_<FIELD>`` (or in ``.env``).

    The provider keys are also read under the providers' usual names, ``OPENAI_API_KEY`` and
    ``ANTHROPIC_API_KEY``, when the ``TIERWISE_`` name is unset. Within one source (the
    environment, or ``.env``) the ``TIERWISE_`` name wins; as for every setting, the
    environment beats ``.env``, so an exported ``OPENAI_API_KEY`` beats a
    ``TIERWISE_OPENAI_API_KEY`` written only in ``.env``.
    """

    model_config = SettingsConfigDict(env_prefix="TIERWISE_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./tierwise.db",
        description="sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db",
    )
    db_statement_cache_size: int | None = Field(
        default=None,
        ge=0,
        description="asyncpg prepared-statement cache; 0 behind PgBouncer in transaction mode",
    )
    policy_file: Path | None = Field(
        default=None, description="policy applied at start-up when the table is empty"
    )
    snapshot_poll_s: float = Field(default=1.0, gt=0, description="routing snapshot poll, s")
    decision_flush_s: float = Field(default=0.2, gt=0, description="decision batch writer, s")
    grading_interval_s: float = Field(default=30.0, gt=0)
    escalation_interval_s: float = Field(default=3600.0, gt=0)
    grading_batch_size: int = Field(default=200, ge=1)
    grading_concurrency: int = Field(default=8, ge=1, description="reference calls in flight")
    grading_lease_s: float = Field(default=600.0, gt=0, description="claim lease on a sample, s")
    run_scheduler: bool = Field(default=True, description="run grading/escalation jobs here")
    datasets_dir: Path = Field(default=Path("datasets"))
    reference_provider: str = Field(
        default="replay",
        description="who answers grading calls: replay (recorded answers, offline) | catalog "
        "(each model's own provider, from the catalog's provider field) | a provider name "
        "(openai, anthropic or a key of providers: every model goes there)",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TIERWISE_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="TIERWISE_OPENAI_API_KEY, else OPENAI_API_KEY",
    )
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TIERWISE_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="TIERWISE_ANTHROPIC_API_KEY, else ANTHROPIC_API_KEY",
    )
    anthropic_base_url: str | None = None
    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict,
        description="upstreams beyond openai and anthropic, by the catalog's provider name, as "
        'JSON: {"together": {"kind": "openai", "base_url": "...", "api_key": "..."}}',
    )
    openai_concurrency: int = Field(default=8, ge=1, description="OpenAI calls in flight")
    anthropic_concurrency: int = Field(default=8, ge=1, description="Anthropic calls in flight")
    provider_max_retries: int = Field(
        default=2, ge=0, description="retries the provider SDK makes (its own loop, none of ours)"
    )
    provider_timeout_s: float = Field(
        default=120.0, gt=0, description="SDK timeout of one HTTP attempt, s"
    )
    grading_budget_s: float = Field(
        default=60.0,
        gt=0,
        description="longest one reference call may wait on rate-limit hints, s; a longer "
        "retry-after defers the sample to the next grading run",
    )
    gateway_upstream: str = Field(
        default="catalog",
        description="who answers gateway calls (POST /v1/chat/completions): catalog (each "
        "model's own provider) | a provider name (every model there) | replay (recorded "
        "answers from the held-out sets, offline)",
    )
    gateway_max_retries: int = Field(
        default=0,
        ge=0,
        description="retries the provider SDK makes of one gateway attempt before the gateway "
        "falls back to the next model of the chain (0: fall back at once)",
    )
    gateway_concurrency: int = Field(
        default=512, ge=1, description="gateway calls in flight per built-in provider"
    )
    cache: bool = Field(
        default=False,
        description="the gateway's semantic cache (router.cache): on for every class whose "
        "policy settings leave cache = true",
    )
    cache_embedder: str = Field(
        default="wordllama",
        description="who embeds cache lookups: wordllama (offline, 256 dimensions, free) or a "
        "catalog model served by an OpenAI-compatible embeddings endpoint (e.g. "
        "text-embedding-3-small; its spend booked)",
    )
    cache_embedding_dim: int = Field(
        default=1536, ge=1, le=16_000, description="dimensions of a catalog embedding model"
    )
    cache_max_entries: int = Field(
        default=50_000,
        ge=1,
        description="entries the in-memory search holds on SQLite (PostgreSQL: pgvector, "
        "no bound)",
    )
    cache_guard_interval_s: float = Field(
        default=300.0, gt=0, description="how often the cache's quality guard runs, s"
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="required as 'Authorization: Bearer <token>' by the operator endpoints "
        "(pin, unpin, override); unset = open, as suits a single embedded process",
    )
    log_level: str = "INFO"
