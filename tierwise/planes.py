"""Both planes of one process, built from settings: engine, router, evaluator, job scheduler.

The HTTP app (:func:`tierwise.app.create_app`) and the job worker (``tierwise worker``) run the
same wiring; the worker just serves no HTTP, so a deployment scales routers and workers apart.
Everything is built inside :func:`running_planes`, never at import.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.cache_guard import cache_guard_job, cache_purge_job
from evaluator.datasets import load_held_out, replay_provider
from evaluator.graders import GraderEnv
from evaluator.service import (
    HELD_OUT_FILES,
    Evaluator,
    default_replay_env,
    held_out_paths,
    provider_env,
)
from router.cache import CacheStage, build_cache_stage
from router.compression.stage import CompressionStage
from router.compression.store import CompressionStore
from router.db import make_engine, session_factory
from router.errors import InvalidInput
from router.gateway import Gateway, Stage
from router.health import DatabaseHealth
from router.jobs import Job, JobScheduler
from router.lane import Lane
from router.lane.tasks import lane_jobs
from router.metrics import Metrics
from router.models import Decision, Outcome, Sample
from router.policy import ModelPrice, load_policy
from router.providers import (
    Provider,
    ProviderRegistry,
    ProviderSettings,
    adapters_from_settings,
    provider_from_settings,
)
from router.service import Router
from router.spool import Spool
from router.table import apply_policy, latest_policy
from tierwise.settings import Settings

log = logging.getLogger(__name__)


async def _apply_initial_policy(sessions: async_sessionmaker[AsyncSession], path: Path) -> None:
    """Apply ``path`` when no policy was ever applied (first start of a fresh database).

    Raises:
        PolicyError: the file is missing or invalid: the service refuses to start on it.
    """
    policy = load_policy(path)
    async with sessions() as session:
        if await latest_policy(session) is None:
            result = await apply_policy(session, policy)
            await session.commit()
            log.info("applied policy %s at start-up: table version %d", path, result.version)


def jobs_of(settings: Settings, control_plane: Evaluator, lane: Lane) -> list[Job]:
    """Every plane's scheduled jobs with the intervals ``settings`` gives (the job registry:
    each domain declares its own: the data plane the batch lane's, the control plane grading,
    escalation, the data lifecycle (the cache's expired entries among it, cache on or off:
    they hold callers' text) and, with the cache on, its quality guard)."""
    jobs = [
        *lane_jobs(lane, settings.lane_interval_s),
        *control_plane.jobs(
            grading_interval_s=settings.grading_interval_s,
            escalation_interval_s=settings.escalation_interval_s,
        ),
        cache_purge_job(control_plane.sessions, interval_s=settings.lifecycle_interval_s),
        *control_plane.lifecycle_jobs(
            interval_s=settings.lifecycle_interval_s,
            ahead_days=settings.partitions_ahead_days,
            partition_retention_days=settings.partition_retention_days,
            text_batch_size=settings.text_retention_batch,
        ),
    ]
    if settings.cache:
        jobs.append(
            cache_guard_job(control_plane.sessions, interval_s=settings.cache_guard_interval_s)
        )
    return jobs


def live_registry(
    settings: ProviderSettings, catalog: Callable[[], Mapping[str, ModelPrice]]
) -> ProviderRegistry:
    """The registry of live providers ``settings.reference_provider`` asks for: ``catalog``
    (each model's own provider) or one provider name (every model there).

    Raises:
        InvalidInput: an unknown provider name, a missing key, a bad ``providers`` entry.
    """
    if settings.reference_provider == "catalog":
        return ProviderRegistry(adapters_from_settings(settings), catalog)
    return ProviderRegistry({}, catalog, force=provider_from_settings(settings))


def gateway_registry(
    settings: Settings, catalog: Callable[[], Mapping[str, ModelPrice]]
) -> ProviderRegistry:
    """The upstreams of gateway calls (``settings.gateway_upstream``): ``catalog`` (each
    model's own provider), one provider name, or ``replay`` (the held-out sets' recorded
    answers in ``settings.datasets_dir``, offline). Live adapters are built apart from the
    grading ones: the SDK retries ``gateway_max_retries`` times (the gateway falls back
    instead), ``gateway_concurrency`` calls in flight per built-in provider, and a wait budget
    as long as the SDK timeout (a retry hint is the fallback's business, not a deferral).

    Raises:
        InvalidInput: an unknown provider name, a missing key, a bad ``providers`` entry.
    """
    if settings.gateway_upstream == "replay":
        sets = [load_held_out(p) for p in held_out_paths(settings.datasets_dir)]
        return ProviderRegistry({}, catalog, force=replay_provider(sets))
    view = settings.model_copy(
        update={
            "reference_provider": settings.gateway_upstream,
            "provider_max_retries": settings.gateway_max_retries,
            "openai_concurrency": settings.gateway_concurrency,
            "anthropic_concurrency": settings.gateway_concurrency,
            "grading_budget_s": settings.provider_timeout_s,
        }
    )
    return live_registry(view, catalog)


@dataclass(frozen=True, slots=True)
class Planes:
    """What :func:`running_planes` built; the scheduler is not started."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    router: Router
    gateway: Gateway
    lane: Lane
    evaluator: Evaluator
    scheduler: JobScheduler
    compression: CompressionStore
    health: DatabaseHealth
    cache: CacheStage | None = None


def _warn_without_held_out_sets(settings: Settings) -> None:
    if held_out_paths(settings.datasets_dir):
        return
    log.warning(
        "reference provider 'replay' found no held-out set (%s) in %s: sampled outcomes cannot "
        "be graded; set TIERWISE_DATASETS_DIR to the folder that holds them (a checkout's "
        "datasets/) or TIERWISE_REFERENCE_PROVIDER to catalog, openai or anthropic",
        ", ".join(HELD_OUT_FILES),
        settings.datasets_dir.resolve(),
    )


@asynccontextmanager
async def running_planes(
    settings: Settings,
    *,
    env_factory: Callable[[], GraderEnv] | None = None,
    gateway_upstream: Provider | None = None,
    metrics: Metrics | None = None,
    spool: bool = False,
) -> AsyncIterator[Planes]:
    """Build and start both planes (the router's snapshot poller and decision writer run; the
    job scheduler is built, not started), and stop them on exit. ``env_factory`` overrides how
    grading reaches a reference model (default: ``settings.reference_provider``);
    ``gateway_upstream`` answers every gateway call (default: :func:`gateway_registry`);
    ``metrics`` counts what the planes do (default: metrics of their own, exposed nowhere).
    ``spool``: the decision writer spools to ``settings.spool_dir`` while the database is
    unreachable (the API process; a worker takes no decisions).

    Raises:
        InvalidInput: ``settings.spool_dir`` is held by another process or cannot be made.
        InvalidInput: an unknown provider, a missing key, a bad ``providers`` entry.
        PolicyError: ``settings.policy_file`` is missing or invalid.
    """
    if env_factory is None and settings.reference_provider == "replay":
        _warn_without_held_out_sets(settings)
    engine = make_engine(
        settings.database_url,
        statement_cache_size=settings.db_statement_cache_size,
        connect_timeout_s=settings.db_connect_timeout_s,
    )
    sessions = session_factory(engine)
    health = DatabaseHealth()
    spool_box: Spool | None = None
    if spool and settings.spool_max_bytes > 0:
        try:
            spool_box = Spool(
                settings.spool_dir, [Decision, Outcome, Sample], max_bytes=settings.spool_max_bytes
            )
        except OSError as exc:  # held by another process, or a folder that cannot be made
            await engine.dispose()
            raise InvalidInput(
                f"cannot use spool folder {settings.spool_dir}: {exc}", field="spool_dir"
            ) from exc
    data_plane = Router(
        sessions,
        poll_interval_s=settings.snapshot_poll_s,
        flush_interval_s=settings.decision_flush_s,
        metrics=metrics,
        spool=spool_box,
        health=health,
        retry_after_s=settings.retry_after_s,
        recent_decisions=settings.recent_decisions,
    )
    live: ProviderRegistry | None = None
    upstreams: ProviderRegistry | None = None
    try:
        if gateway_upstream is not None:
            upstreams = ProviderRegistry({}, lambda: data_plane.catalog, force=gateway_upstream)
        else:
            upstreams = gateway_registry(settings, lambda: data_plane.catalog)
        compression = CompressionStore(sessions, sync_s=settings.snapshot_poll_s)
        cache = (
            build_cache_stage(
                data_plane,
                sessions,
                embedder=settings.cache_embedder,
                upstream=upstreams.adapter_for,
                dim=settings.cache_embedding_dim,
                max_entries=settings.cache_max_entries,
                flush_interval_s=settings.decision_flush_s,
            )
            if settings.cache
            else None
        )
        # The cache first: it is keyed by the request as the caller sent it, and a hit needs
        # no compression.
        stages: list[Stage] = [] if cache is None else [cache]
        stages.append(CompressionStage(lambda: data_plane.snapshot, compression))
        gateway = Gateway(data_plane, upstreams.adapter_for, stages=stages)
        lane = Lane(
            data_plane,
            sessions,
            upstreams.adapter_for,
            max_attempts=settings.lane_max_attempts,
            flush_size=settings.lane_flush_size,
            max_wait_s=settings.lane_max_wait_s,
            webhook_hosts=settings.lane_webhook_hosts,
        )
        if env_factory is None and settings.reference_provider != "replay":
            live = live_registry(settings, lambda: data_plane.catalog)
        registry = live
        control_plane = Evaluator(
            sessions,
            env_factory
            or (
                (lambda: default_replay_env(settings.datasets_dir))
                if registry is None
                else (lambda: provider_env(registry.for_model))
            ),
            batch_size=settings.grading_batch_size,
            concurrency=settings.grading_concurrency,
            lease_s=settings.grading_lease_s,
        )
        if settings.policy_file is not None:
            await _apply_initial_policy(sessions, settings.policy_file)
        await data_plane.start()
        if cache is not None:
            await cache.start()
        try:
            if live is not None:
                for provider, models in live.unconfigured(data_plane.catalog).items():
                    log.warning(
                        "no provider '%s' is configured: calls to %s will fail",
                        provider,
                        ", ".join(sorted(models)),
                    )
            if gateway_upstream is None and settings.gateway_upstream != "replay":
                for provider, models in upstreams.unconfigured(data_plane.catalog).items():
                    log.warning(
                        "gateway: no provider '%s' is configured: calls routed to %s will fail "
                        "over to their fallbacks, or fail",
                        provider,
                        ", ".join(sorted(models)),
                    )
            scheduler = JobScheduler(jobs_of(settings, control_plane, lane), health=health)
            data_plane.metrics.watch_jobs(scheduler)
            if spool_box is not None:
                data_plane.metrics.watch_spool(lambda: data_plane.writer.spooled)
            try:
                yield Planes(
                    engine,
                    sessions,
                    data_plane,
                    gateway,
                    lane,
                    control_plane,
                    scheduler,
                    compression,
                    health,
                    cache,
                )
            finally:
                await scheduler.aclose()
                await compression.aclose()
        finally:
            if cache is not None:
                await cache.stop()
            await data_plane.stop()
    finally:
        await engine.dispose()
        if spool_box is not None:
            spool_box.close()
        if live is not None:
            await live.aclose()
        if upstreams is not None and gateway_upstream is None:
            await upstreams.aclose()


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every plane's scheduled jobs until SIGINT / SIGTERM (or ``stop`` is set), serving no
    HTTP. The router's snapshot poller runs too (the provider registry reads its catalog).

    Raises:
        InvalidInput, PolicyError: as :func:`running_planes`.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_planes(settings) as planes:
            planes.scheduler.start()
            names = ", ".join(f"{j.name} every {j.interval_s:g} s" for j in planes.scheduler.jobs)
            log.info("worker running jobs: %s", names)
            await stop.wait()
            log.info("worker stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
