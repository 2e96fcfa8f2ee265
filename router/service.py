"""The data plane: decisions from an in-memory snapshot, outcome intake, pricing.

One :class:`Router` per process. ``decide`` is synchronous and touches no database: it reads the
current :class:`~router.table.RoutingSnapshot` and appends the decision to a buffer that a
background task writes in batches. A poller reloads the snapshot when the table version moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import utcnow
from router.dialect import insert_ignore
from router.errors import NotFound, TierwiseError
from router.models import Decision, Outcome, Sample, TaskClass
from router.policy import ModelPrice
from router.pricing import cost_usd, normalize_usage
from router.sampling import is_sampled
from router.table import RoutingSnapshot, current_version, load_snapshot

log = logging.getLogger(__name__)


# Decisions kept in memory while the database cannot take them (~1 KB each).
MAX_BUFFERED_DECISIONS = 200_000


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
    under the class's sample rate, unless the class is pinned, or on its reference model and not
    ``escalated`` (there is nothing to compare it with). An ``escalated`` class is sampled even on
    its reference model: its samples are the shadow probes that can bring it back down (the
    grading job asks the next cheaper model for its answer, off the hot path; see
    ``evaluator.grading.shadow_model``).
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
        status != "pinned"
        and (model != reference or status == "escalated")
        and is_sampled(decision_id, settings.sample_rate)
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


def _gradable(decision: Decision, report: OutcomeReport) -> bool:
    """A sampled decision's outcome that can be graded: status ok, with messages and text."""
    return (
        decision.sampled
        and report.status == "ok"
        and report.output_text is not None
        and bool(report.input_messages)
    )


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
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Classes this process has written to the class registry (``task_class``).
        self._known_classes: set[str] = set()

    # ---- snapshot -------------------------------------------------------------------------
    @property
    def snapshot(self) -> RoutingSnapshot:
        """The current snapshot. Raises NoPolicy (503) before any policy was applied."""
        if self._snapshot is None:
            raise NoPolicy("no routing policy applied yet: run `tierwise policy apply FILE`")
        return self._snapshot

    @property
    def catalog(self) -> dict[str, ModelPrice]:
        """The serving snapshot's model catalog; empty before any policy was applied."""
        return {} if self._snapshot is None else self._snapshot.catalog

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload the snapshot if the table version moved (or ``force``). True if reloaded."""
        async with self._sessions() as session:
            current = self._snapshot
            if (
                not force
                and current is not None
                and (await current_version(session) == current.version)
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
        request_id: str | None = None,
        item_id: str | None = None,
    ) -> RouteDecision:
        """Decide and buffer the decision for the batch writer. No I/O.

        ``request_id`` (the caller's id) makes the decision repeatable: the decision id is
        derived from it and from the request's task type, tokens and tool use, so a retried call
        gets the same id and sampling answer, and a reused request id with a different request
        gets a different decision id. Default: a random UUID.
        """
        if request_id is None:
            decision_id = uuid.uuid4().hex
        else:
            key = f"{request_id}|{task_type}|{input_tokens}|{has_tool_calls}".encode()
            decision_id = f"{request_id}.{hashlib.blake2b(key, digest_size=6).hexdigest()}"
        decision = decide(self.snapshot, task_type, input_tokens, has_tool_calls, decision_id)
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
                "item_id": item_id,
                "created_at": utcnow(),
            }
        )
        if len(self._buffer) >= self._flush_size and not self._flush_lock.locked():
            self._wake.set()
        return decision

    async def flush(self) -> int:
        """Write buffered decisions in one batch; returns how many were written.

        A database that is down, locked or out of connections keeps the batch for the next try
        (the buffer is bounded at ``MAX_BUFFERED_DECISIONS``; past that the oldest are dropped and
        logged). Only rows the database refuses as data (``IntegrityError``/``DataError``) are
        written one by one and the refused ones dropped, so one bad row cannot block the rest.
        A cancelled flush (shutdown, a cancelled request) puts its batch back.

        Raises:
            DBAPIError | OSError: the database could not be reached; the batch is kept.
        """
        async with self._flush_lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                await self._write_decisions(batch)
            except (IntegrityError, DataError):
                written = 0
                for row in batch:
                    try:
                        await self._write_decisions([row])
                        written += 1
                    except (IntegrityError, DataError):
                        log.exception("decision %s refused by the database; dropped", row["id"])
                return written
            except BaseException:
                self._restore(batch)
                raise
            return len(batch)

    def _restore(self, batch: list[dict[str, Any]]) -> None:
        """Put an unwritten batch back in front of the buffer, within its bound."""
        self._buffer[:0] = batch
        excess = len(self._buffer) - MAX_BUFFERED_DECISIONS
        if excess > 0:
            log.error("decision buffer full: dropping the %d oldest unwritten decisions", excess)
            del self._buffer[:excess]

    async def _write_decisions(self, rows: list[dict[str, Any]]) -> None:
        new = {r["task_class"]: r["created_at"] for r in rows} if rows else {}
        for known in self._known_classes & new.keys():
            del new[known]
        async with self._sessions() as session:
            if new:
                await session.exec(
                    insert_ignore(session, TaskClass),
                    params=[{"name": c, "first_routed_at": at} for c, at in new.items()],
                )
            await session.exec(insert_ignore(session, Decision), params=rows)
            await session.commit()
        self._known_classes |= new.keys()

    # ---- outcomes -------------------------------------------------------------------------
    async def record_outcomes(
        self, reports: Sequence[OutcomeReport], *, labels: Sequence[str] | None = None
    ) -> list[OutcomeResult]:
        """Store outcome reports, price them, queue sampled text. Idempotent on decision id.

        All or nothing: an unknown decision id or a bad usage object rejects the whole request
        and stores nothing, so the caller can fix and resend. ``labels`` name each report in
        errors (default ``[i]``; ``""`` for a single report: ``usage.prompt_tokens``).

        Raises:
            NotFound: a decision id is unknown (404, field ``[i].decision_id``).
            InvalidInput: a usage count is not a whole number >= 0 (422).
        """
        await self.flush()
        labels = labels or [f"[{i}]" for i in range(len(reports))]

        def where(i: int, name: str) -> str:
            return f"{labels[i]}.{name}" if labels[i] else name

        # A dated id the provider reported (gpt-4o-mini-2024-07-18) is priced and graded as the
        # catalog model it names.
        canonical = self.snapshot.canonical
        reports = [replace(r, served_model=canonical(r.served_model)) for r in reports]
        ids = [r.decision_id for r in reports]
        usages = [normalize_usage(r.usage, field=where(i, "usage")) for i, r in enumerate(reports)]
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
                        f"unknown decision_id '{report.decision_id}'",
                        field=where(i, "decision_id"),
                    )
            done = set(
                (
                    await session.exec(
                        select(Outcome.decision_id).where(col(Outcome.decision_id).in_(ids))
                    )
                ).all()
            )
            sampled_done = set(
                (
                    await session.exec(
                        select(Sample.decision_id).where(col(Sample.decision_id).in_(ids))
                    )
                ).all()
            )
            catalog = self.snapshot.catalog
            results: list[OutcomeResult] = []
            now = utcnow()
            seen: set[str] = set()
            for report, usage in zip(reports, usages, strict=True):
                decision = decisions[report.decision_id]
                if report.decision_id in done or report.decision_id in seen:
                    # Idempotent: the first report stands. A sampled decision whose first report
                    # came without its text may still get the text now.
                    queued = False
                    if report.decision_id not in sampled_done and _gradable(decision, report):
                        await self._queue_sample(session, decision, report, now)
                        sampled_done.add(report.decision_id)
                        queued = True
                    dup_note = (
                        "duplicate: text attached to the earlier report"
                        if queued
                        else ("duplicate: the first report stands")
                    )
                    results.append(OutcomeResult(report.decision_id, False, None, queued, dup_note))
                    continue
                seen.add(report.decision_id)
                price = catalog.get(report.served_model)
                cost = None if report.usage is None else cost_usd(usage, price)
                await session.exec(
                    insert_ignore(session, Outcome).values(
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
                queued = False
                note: str | None = None
                if report.usage is None:
                    note = "no usage reported: unpriced"
                elif price is None:
                    note = "unpriced model"
                if decision.sampled:
                    if report.status != "ok":
                        note = "sampled, but status is not ok: not graded"
                    elif not _gradable(decision, report):
                        note = (
                            "sampled, but input_messages/output_text missing: not graded yet "
                            "(send them again with the same decision_id)"
                        )
                    else:
                        await self._queue_sample(session, decision, report, now)
                        sampled_done.add(report.decision_id)
                        queued = True
                results.append(OutcomeResult(report.decision_id, True, cost, queued, note))
            await session.commit()
        return results

    @staticmethod
    async def _queue_sample(
        session: AsyncSession,
        decision: Decision,
        report: OutcomeReport,
        now: datetime,
    ) -> None:
        await session.exec(
            insert_ignore(session, Sample).values(
                decision_id=report.decision_id,
                task_class=decision.task_class,
                model=report.served_model,
                input_messages=report.input_messages,
                output_text=report.output_text,
                meta=decision.meta,
                item_id=decision.item_id,
                status="queued",
                attempts=0,
                decided_at=decision.created_at,
                created_at=now,
            )
        )

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the snapshot and start the poller and the batch writer."""
        await self.refresh(force=True)
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(
                self._loop(self._poll_interval_s, self.refresh, self._stopping), name="poll"
            ),
            asyncio.create_task(
                self._loop(self._flush_interval_s, self.flush, self._wake), name="flush"
            ),
        ]

    async def stop(self) -> None:
        """Stop the background loops (each finishes what it is doing: no write is cut in half)
        and write what is buffered.

        Raises:
            DBAPIError | OSError: the final write failed; the decisions stay in the buffer.
        """
        self._stopping.set()
        self._wake.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush()

    async def _loop(self, interval: float, fn: Any, wake: asyncio.Event) -> None:
        """Run ``fn`` every ``interval`` s, sooner when ``wake`` is set, until stop."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
            if wake is not self._stopping:
                wake.clear()
            if self._stopping.is_set():
                return
            try:
                await fn()
            except Exception:
                log.exception("background %s failed; retrying in %.1f s", fn.__name__, interval)
