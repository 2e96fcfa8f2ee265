"""The data plane: decisions from an in-memory snapshot, outcome intake, pricing.

One :class:`Router` per process. ``decide`` is synchronous and touches no database: it reads the
current :class:`~router.table.RoutingSnapshot` and appends the decision to a buffer that a
background task writes in batches. A poller reloads the snapshot when the table version moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import dialect_of, utcnow
from router.errors import NotFound, TierwiseError
from router.models import Decision, Outcome, Sample
from router.pricing import cost_usd, normalize_usage
from router.sampling import is_sampled
from router.table import RoutingSnapshot, current_version, load_snapshot

log = logging.getLogger(__name__)


class NoPolicy(TierwiseError):
    code = "no_policy"
    status = 503


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The answer to a route call. ``table_version`` is the snapshot's version."""

    decision_id: str
    task_type: str
    task_class: str
    tier: str
    model: str
    provider: str
    table_version: int
    sampled: bool
    status: str
    reason: str
    input_tokens: int
    has_tool_calls: bool


def decide(
    snapshot: RoutingSnapshot,
    task_type: str,
    input_tokens: int,
    has_tool_calls: bool,
    decision_id: str,
) -> RouteDecision:
    """Route one request against ``snapshot``. Pure: no I/O, no clock.

    The policy's rules give the task class and base tier; the routing-table entry, when the class
    has one, gives the current model and status. A decision is sampled when the decision id hashes
    under the class's sample rate, unless the class is pinned or already on its reference model
    (there is nothing to compare it with).
    """
    policy = snapshot.policy
    match = policy.match(task_type, input_tokens, has_tool_calls)
    entry = snapshot.entries.get(match.task_class)
    if entry is None:
        tier, model, status = match.tier, policy.model_for_tier(match.tier), "baseline"
        reason = f"{match.reason} -> tier {tier} -> {model} (class not in table: policy default)"
    else:
        tier, model, status = entry.tier, entry.model, entry.status
        reason = (
            f"{match.reason} -> class {entry.task_class} is {status} on {model} (v{entry.version})"
        )
    settings = policy.settings_for(match.task_class)
    reference = settings.reference_model or policy.spec.premium_model
    sampled = (
        status != "pinned" and model != reference and is_sampled(decision_id, settings.sample_rate)
    )
    return RouteDecision(
        decision_id=decision_id,
        task_type=task_type,
        task_class=match.task_class,
        tier=tier,
        model=model,
        provider=snapshot.provider_of(model),
        table_version=snapshot.version,
        sampled=sampled,
        status=status,
        reason=reason,
        input_tokens=input_tokens,
        has_tool_calls=has_tool_calls,
    )


def _insert(dialect: str, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the session's dialect."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """A validated outcome, as the API hands it to the service."""

    decision_id: str
    served_model: str
    status: str
    latency_ms: float | None
    usage: dict[str, Any] | None
    input_messages: list[dict[str, Any]] | None
    output_text: str | None


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    decision_id: str
    stored: bool
    cost_usd: float | None
    sample_queued: bool
    note: str | None


class Router:
    """Per-process data plane: snapshot, decisions, decision buffer, outcome intake."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        poll_interval_s: float = 1.0,
        flush_interval_s: float = 0.2,
        flush_size: int = 500,
    ) -> None:
        self._sessions = sessions
        self._snapshot: RoutingSnapshot | None = None
        self._poll_interval_s = poll_interval_s
        self._flush_interval_s = flush_interval_s
        self._flush_size = flush_size
        self._buffer: list[dict[str, Any]] = []
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- snapshot -------------------------------------------------------------------------
    @property
    def snapshot(self) -> RoutingSnapshot:
        """The current snapshot. Raises NoPolicy (503) before any policy was applied."""
        if self._snapshot is None:
            raise NoPolicy("no routing policy applied yet: run `tierwise policy apply FILE`")
        return self._snapshot

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload the snapshot if the table version moved (or ``force``). True if reloaded."""
        async with self._sessions() as session:
            current = self._snapshot
            if not force and current is not None and (
                await current_version(session) == current.version
            ):
                return False
            snapshot = await load_snapshot(session)
        if snapshot is None:
            return False
        self._snapshot = snapshot
        log.info("routing snapshot now at table version %d", snapshot.version)
        return True

    # ---- decisions ------------------------------------------------------------------------
    @property
    def table_version(self) -> int | None:
        """Version of the serving snapshot; None before any policy was applied."""
        return None if self._snapshot is None else self._snapshot.version

    def route(
        self,
        task_type: str,
        input_tokens: int,
        has_tool_calls: bool,
        meta: dict[str, Any] | None,
        *,
        decision_id: str | None = None,
    ) -> RouteDecision:
        """Decide and buffer the decision for the batch writer. No I/O.

        ``decision_id`` defaults to a random UUID; a caller-given id makes sampling repeatable.
        A repeated id keeps the first decision stored (the insert ignores conflicts).
        """
        decision = decide(
            self.snapshot, task_type, input_tokens, has_tool_calls, decision_id or uuid.uuid4().hex
        )
        self._buffer.append(
            {
                "id": decision.decision_id,
                "task_type": task_type,
                "task_class": decision.task_class,
                "tier": decision.tier,
                "model": decision.model,
                "provider": decision.provider,
                "table_version": decision.table_version,
                "sampled": decision.sampled,
                "input_tokens": input_tokens,
                "has_tool_calls": has_tool_calls,
                "meta": meta,
                "created_at": utcnow(),
            }
        )
        if len(self._buffer) >= self._flush_size and not self._flush_lock.locked():
            asyncio.get_running_loop().create_task(self.flush())
        return decision

    async def flush(self) -> int:
        """Write buffered decisions in one batch; returns how many were written."""
        async with self._flush_lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                async with self._sessions() as session:
                    await session.exec(_insert(dialect_of(session), Decision), params=batch)
                    await session.commit()
            except Exception:
                self._buffer[:0] = batch  # keep them for the next try; nothing is lost
                raise
            return len(batch)

    # ---- outcomes -------------------------------------------------------------------------
    async def record_outcomes(self, reports: Sequence[OutcomeReport]) -> list[OutcomeResult]:
        """Store outcome reports, price them, queue sampled text. Idempotent on decision id.

        All or nothing: an unknown decision id or a bad usage object rejects the whole request
        (naming ``[i].field``) and stores nothing, so the caller can fix and resend.

        Raises:
            NotFound: a decision id is unknown (404, field ``[i].decision_id``).
            InvalidInput: a usage count is not a whole number >= 0 (422).
        """
        await self.flush()
        ids = [r.decision_id for r in reports]
        usages = [normalize_usage(r.usage, field=f"[{i}].usage") for i, r in enumerate(reports)]
        async with self._sessions() as session:
            decisions = {
                d.id: d
                for d in (
                    await session.exec(select(Decision).where(col(Decision.id).in_(ids)))
                ).all()
            }
            for i, report in enumerate(reports):
                if report.decision_id not in decisions:
                    raise NotFound(
                        f"unknown decision_id '{report.decision_id}'", field=f"[{i}].decision_id"
                    )
            done = set(
                (
                    await session.exec(
                        select(Outcome.decision_id).where(col(Outcome.decision_id).in_(ids))
                    )
                ).all()
            )
            catalog = self.snapshot.catalog
            dialect = dialect_of(session)
            results: list[OutcomeResult] = []
            now = utcnow()
            seen: set[str] = set()
            for report, usage in zip(reports, usages, strict=True):
                decision = decisions[report.decision_id]
                if report.decision_id in done or report.decision_id in seen:
                    results.append(
                        OutcomeResult(report.decision_id, False, None, False, "duplicate")
                    )
                    continue
                seen.add(report.decision_id)
                price = catalog.get(report.served_model)
                cost = cost_usd(usage, price)
                await session.exec(
                    _insert(dialect, Outcome).values(
                        decision_id=report.decision_id,
                        task_class=decision.task_class,
                        served_model=report.served_model,
                        status=report.status,
                        latency_ms=report.latency_ms,
                        input_tokens=usage.input_tokens,
                        cached_input_tokens=usage.cached_input_tokens,
                        cache_write_tokens=usage.cache_write_tokens,
                        output_tokens=usage.output_tokens,
                        reasoning_tokens=usage.reasoning_tokens,
                        cost_usd=cost,
                        usage_raw=report.usage,
                        created_at=now,
                    )
                )
                queued, note = False, None if price is not None else "unpriced model"
                if decision.sampled:
                    if report.status != "ok":
                        note = "sampled, but status is not ok: not graded"
                    elif report.output_text is None or not report.input_messages:
                        note = "sampled, but input_messages/output_text missing: not graded"
                    else:
                        await session.exec(
                            _insert(dialect, Sample).values(
                                decision_id=report.decision_id,
                                task_class=decision.task_class,
                                model=report.served_model,
                                input_messages=report.input_messages,
                                output_text=report.output_text,
                                meta=decision.meta,
                                status="queued",
                                attempts=0,
                                decided_at=decision.created_at,
                                created_at=now,
                            )
                        )
                        queued = True
                results.append(OutcomeResult(report.decision_id, True, cost, queued, note))
            await session.commit()
        return results

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the snapshot and start the poller and the batch writer."""
        await self.refresh(force=True)
        self._tasks = [
            asyncio.create_task(self._every(self._poll_interval_s, self.refresh), name="poll"),
            asyncio.create_task(self._every(self._flush_interval_s, self.flush), name="flush"),
        ]

    async def stop(self) -> None:
        """Stop background tasks and write what is buffered."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.flush()

    @staticmethod
    async def _every(interval: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await fn()
            except Exception:
                log.exception("background %s failed; retrying in %.1f s", fn.__name__, interval)
