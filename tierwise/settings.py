"""All configuration, in one pydantic-settings class. No other module reads the environment."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from router.errors import InvalidInput
from router.providers import ProviderConfig
from tierwise.limits import DEFAULT_MAX_REQUEST_BYTES

log = logging.getLogger("tierwise.settings")

PREFIX = "TIERWISE_"


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
    lane_interval_s: float = Field(
        default=30.0, gt=0, description="batch lane: submit queued lines and poll batches, s"
    )
    lane_flush_size: int = Field(
        default=1000, ge=1, description="batch lane: deferred calls of a model sent together"
    )
    lane_max_wait_s: float = Field(
        default=30.0, gt=0, description="batch lane: the longest a deferred call waits to go, s"
    )
    lane_webhook_hosts: list[str] = Field(
        default_factory=list,
        description="batch lane: the hosts (host or host:port) a deferred call's "
        "X-Tierwise-Webhook may name, as JSON; empty = webhooks refused",
    )
    lane_max_attempts: int = Field(
        default=3, ge=1, description="batch lane: submissions a line gets before it is reported"
    )
    lifecycle_interval_s: float = Field(
        default=3600.0, gt=0, description="text retention and partition maintenance jobs, s"
    )
    text_retention_batch: int = Field(
        default=1000, ge=1, description="samples whose text one retention transaction deletes"
    )
    partitions_ahead_days: int = Field(
        default=7, ge=1, le=366, description="PostgreSQL day partitions created ahead, days"
    )
    partition_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="PostgreSQL: decision and outcome day partitions older than this many days "
        "are dropped whole (None = kept forever)",
    )
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
        description="entries the in-memory search holds on SQLite (PostgreSQL: pgvector, no bound)",
    )
    cache_guard_interval_s: float = Field(
        default=300.0, gt=0, description="how often the cache's quality guard runs, s"
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="required as 'Authorization: Bearer <token>' by the operator endpoints "
        "(pin, unpin, override); unset = open, as suits a single embedded process",
    )
    max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        ge=1024,
        description="largest request body any endpoint accepts, bytes (gateway included); "
        "a larger one is answered 413 before it is read",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = Field(
        default="console",
        description="json: one JSON object a line (request_id, decision_id bound); console",
    )
    access_log: bool = Field(
        default=False, description="one log line per HTTP request (status, duration_ms, ids)"
    )
    spool_dir: Path = Field(
        default=Path("tierwise-spool"),
        description="where `tierwise serve` spools acknowledged decisions and outcomes while "
        "the database is unreachable (one folder per process; replayed at the next start)",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="bound on the spool, bytes (about 1 KB a decision); past it, requests "
        "that would need it are refused with 503; 0 = no spool (rows kept in memory only)",
    )
    retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After of a 503 while the database is unreachable, s"
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="how long one PostgreSQL connection attempt may take, s"
    )
    recent_decisions: int = Field(
        default=50_000,
        ge=0,
        description="decisions remembered in memory, so their outcomes can be spooled while "
        "the database is unreachable",
    )
    ready_snapshot_max_age_s: float = Field(
        default=30.0, gt=0, description="/readyz fails once the snapshot is older than this, s"
    )
    ready_max_job_lag_s: float = Field(
        default=600.0, gt=0, description="/readyz fails once a job is later than this, s"
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        check_database_url(value)
        return value


def check_database_url(url: str) -> None:
    """Refuse a database URL tierwise cannot use, saying what to change.

    Raises:
        InvalidInput: not ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` (field
            ``database_url``).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        shown = url.split("@")[-1] if "@" in url else url
        raise InvalidInput(
            f"database URL {shown!r} (TIERWISE_DATABASE_URL, --database-url) is not a URL: use "
            "sqlite+aiosqlite:///path/to/tierwise.db or postgresql+asyncpg://user@host/db",
            field="database_url",
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    # From the name alone: asking SQLAlchemy for the driver would load its dialect.
    backend, _, driver = parsed.drivername.partition("+")
    wanted = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
    if backend not in wanted:
        raise InvalidInput(
            f"cannot use database {shown} (TIERWISE_DATABASE_URL, --database-url): tierwise "
            f"runs on SQLite or PostgreSQL, not {backend!r}: "
            "use sqlite+aiosqlite:///path/to/tierwise.db or postgresql+asyncpg://user@host/db",
            field="database_url",
        )
    if driver != wanted[backend]:
        fixed = f"{backend}+{wanted[backend]}://"
        raise InvalidInput(
            f"database URL (TIERWISE_DATABASE_URL, --database-url): the {backend} driver must be "
            f"{wanted[backend]}: write "
            f"{fixed}... instead of {parsed.drivername}://...",
            field="database_url",
        )


def known_names() -> set[str]:
    """Every ``TIERWISE_*`` name a setting is read from (field names and aliases)."""
    names = {PREFIX + name.upper() for name in Settings.model_fields}
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str) and c.startswith(PREFIX)}
    return names


def unknown_names(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> list[tuple[str, str | None]]:
    """``TIERWISE_*`` names in ``environ`` (default: the process environment) and in the
    ``dotenv`` file that no setting reads, sorted, each with the closest known name (difflib's
    ratio >= 0.6 on the part after ``TIERWISE_``) or None. Names only, never values (they may
    be keys)."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    seen = {k.upper() for k in environ if k.upper().startswith(PREFIX)}
    if dotenv is not None and dotenv.is_file():
        seen |= {k.upper() for k in dotenv_values(dotenv) if k.upper().startswith(PREFIX)}
    # Names tierwise's own tests and tools read; not settings, not typos.
    ignored = {"TIERWISE_TEST_PG_URL"}
    known = known_names()
    found = []
    # Compared without the shared prefix, which would make every name look close.
    tails = sorted(k.removeprefix(PREFIX) for k in known)
    for name in sorted(seen - known - ignored):
        close = difflib.get_close_matches(name.removeprefix(PREFIX), tails, n=1, cutoff=0.6)
        found.append((name, PREFIX + close[0] if close else None))
    return found


def warn_unknown_names(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> list[str]:
    """Log one warning per unknown ``TIERWISE_*`` name (:func:`unknown_names`): a mistyped
    setting is otherwise silently ignored. Returns the lines logged."""
    lines = []
    for name, close in unknown_names(environ, dotenv):
        hint = f"; did you mean {close}?" if close else ""
        lines.append(f"unknown setting {name} is ignored{hint}")
        log.warning("%s", lines[-1])
    return lines
