"""The data plane of one process: the routing snapshot, decisions, and outcome intake.

One :class:`Router` per process. :meth:`Router.route` is synchronous and touches no database:
it asks :func:`router.decide.decide` on the current :class:`~router.table.RoutingSnapshot` and
hands the decision row to the :class:`~router.writer.BatchWriter`, which writes in batches off
the hot path (registering new task classes in the class registry as it goes). A poller reloads
the snapshot when the table version moves. Outcomes go through :mod:`router.outcomes` in one
transaction per request.

While the database is unreachable the snapshot keeps serving, the writer spools what is
acknowledged (:mod:`router.writer`, :mod:`router.spool`), and an outcome for a decision this
process remembers (the last ``recent_decisions``) is spooled with it; the poller's failures go
to :class:`~router.health.DatabaseHealth`, not to a traceback per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from router import repository
from router.db import utcnow
from router.decide import RouteDecision, decide, decision_id_for
from router.errors import InvalidInput, TierwiseError, Unavailable
from router.health import DatabaseHealth, is_connection_error
from router.metrics import Metrics
from router.models import Decision, Outcome, Sample
from router.outcomes import (
    KnownDecision,
    OutcomeReport,
    OutcomeResult,
    outcome_values,
    record_outcomes,
    spool_outcomes,
)
from router.policy import ModelPrice
from router.pricing import Usage, normalize_usage
from router.pricing import cost_nusd as cost_nusd_of
from router.redaction import stored_text
from router.spool import Spool
from router.table import RoutingSnapshot, current_version, load_snapshot
from router.task_types import UnknownTaskType, UnknownTaskTypes
from router.writer import Batch, BatchWriter

log = logging.getLogger(__name__)

MAX_BUFFERED_ROWS = 200_000
"""Rows the batch writer keeps while the database cannot take them (~1 KB a decision)."""


class NoPolicy(TierwiseError):
    code = "no_policy"
    status = 503


class Router:
    """Per-process data plane: snapshot, decisions through the batch writer, outcome intake.

    Args:
        sessions: the session factory.
        poll_interval_s: how often the snapshot's table version is checked, s.
        flush_interval_s: how often the batch writer writes, s.
        flush_size: buffered rows that make the writer write at once.
        metrics: where decisions and outcomes are counted (default: metrics of its own).
        spool: where acknowledged rows go while the database is unreachable (None: memory
            only; see :mod:`router.writer`).
        health: where database failures are reported (default: a new one).
        retry_after_s: ``Retry-After`` of a 503 while the database is unreachable, s.
        recent_decisions: decisions remembered in memory, so that their outcomes can be
            spooled during an outage.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        poll_interval_s: float = 1.0,
        flush_interval_s: float = 0.2,
        flush_size: int = 500,
        metrics: Metrics | None = None,
        spool: Spool | None = None,
        health: DatabaseHealth | None = None,
        retry_after_s: int = 5,
        recent_decisions: int = 50_000,
    ) -> None:
        self._sessions = sessions
        self.metrics = metrics or Metrics()
        self._snapshot: RoutingSnapshot | None = None
        self._poll_interval_s = poll_interval_s
        self.health = health or DatabaseHealth()
        self.retry_after_s = retry_after_s
        self.writer = BatchWriter(
            sessions,
            [Decision, Outcome, Sample],
            flush_interval_s=flush_interval_s,
            flush_size=flush_size,
            max_buffered=MAX_BUFFERED_ROWS,
            before_write=self._register_classes,
            spool=spool,
            health=self.health,
            retry_s=max(flush_interval_s, min(poll_interval_s, 1.0)),
            retry_after_s=retry_after_s,
        )
        self.metrics.watch_writer(lambda: self.writer.depth)
        self._recent: dict[str, tuple[Any, ...]] = {}
        self._recent_max = recent_decisions
        self.snapshot_checked_at: float | None = None
        """``time.monotonic()`` of the last successful look at the table version."""
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self.unknown_task_types = UnknownTaskTypes()
        """Unknown task types this process routed as ``default`` or refused, counted (a
        metrics counter attaches to its ``listeners``)."""

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

    @property
    def table_version(self) -> int | None:
        """Version of the serving snapshot; None before any policy was applied."""
        return None if self._snapshot is None else self._snapshot.version

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
                self.snapshot_checked_at = time.monotonic()
                return False
            snapshot = await load_snapshot(session)
        self.snapshot_checked_at = time.monotonic()
        if snapshot is None:
            return False
        self._snapshot = snapshot
        log.info("routing snapshot now at table version %d", snapshot.version)
        return True

    # ---- decisions ------------------------------------------------------------------------
    def route(
        self,
        task_type: str,
        input_tokens: int,
        has_tool_calls: bool,
        meta: dict[str, Any] | None,
        *,
        request_id: str | None = None,
        item_id: str | None = None,
        caller: str | None = None,
        shadow: bool = False,
        at: datetime | None = None,
    ) -> RouteDecision:
        """Decide and hand the decision to the batch writer. No I/O.

        ``request_id`` (the caller's id) makes the decision repeatable
        (:func:`router.decide.decision_id_for`). ``meta`` is the caller's metadata, stored as
        sent; ``item_id`` the held-out item a replayed request stands for; ``caller`` the API
        key's id (``api_key.id``); ``shadow`` marks a gateway call in shadow mode (the caller
        is served the model it named; the decision says what tierwise would have chosen);
        ``at`` the decision's time (default now, UTC).

        Raises:
            NoPolicy: no routing policy applied yet (503).
            UnknownTaskType: an unknown task type the policy rejects (422).
        """
        decision, row = self.decide_call(
            task_type,
            input_tokens,
            has_tool_calls,
            meta,
            request_id=request_id,
            item_id=item_id,
            caller=caller,
            shadow=shadow,
            at=at,
        )
        self.writer.add(Decision, row)
        self.metrics.decided(decision.task_class, decision.model, decision.sampled)
        self._remember(row)
        return decision

    def _known(self, decision_id: str) -> KnownDecision | None:
        """A decision this process remembers (:meth:`_remember`), if it does."""
        held = self._recent.get(decision_id)
        return None if held is None else KnownDecision(*held)

    def _remember(self, row: dict[str, Any]) -> None:
        recent = self._recent
        # A plain tuple: once the collector sees it holds only atomic values it stops tracking
        # it, so the 50,000 remembered decisions cost full collections nothing (a dataclass
        # stays tracked: they were a third of what each full collection walked under load).
        recent[row["id"]] = (
            row["task_class"],
            row["sampled"],
            row["created_at"],
            row["item_id"],
            row["meta"],
        )
        if len(recent) > self._recent_max:
            del recent[next(iter(recent))]

    def decide_call(
        self,
        task_type: str,
        input_tokens: int,
        has_tool_calls: bool,
        meta: dict[str, Any] | None,
        *,
        request_id: str | None = None,
        item_id: str | None = None,
        caller: str | None = None,
        shadow: bool = False,
        at: datetime | None = None,
    ) -> tuple[RouteDecision, dict[str, Any]]:
        """The decision and its ``decision`` row, written nowhere yet: :meth:`route` hands the
        row to the batch writer at once, the gateway with the call's outcome
        (:meth:`record_call`), so a call refused before it reached an upstream leaves no row.
        Arguments as :meth:`route`.

        Raises:
            NoPolicy: no routing policy applied yet (503).
            UnknownTaskType: an unknown task type the policy rejects (422); counted, as an
                unknown task type routed as ``default`` is (:attr:`unknown_task_types`).
            Unavailable: the database is unreachable and the spool is full (503).
        """
        self.writer.check_room()
        decision_id = decision_id_for(request_id, task_type, input_tokens, has_tool_calls)
        try:
            decision = decide(self.snapshot, task_type, input_tokens, has_tool_calls, decision_id)
        except UnknownTaskType:
            self.unknown_task_types.record(task_type, "reject")
            raise
        if decision.unknown_task_type:
            self.unknown_task_types.record(task_type, "default")
        row = {
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
            "caller": caller,
            "shadow": shadow,
            "created_at": at or utcnow(),
        }
        return decision, row

    def record_call(
        self,
        decision: RouteDecision,
        decision_row: dict[str, Any],
        report: OutcomeReport,
        *,
        attempts: list[dict[str, Any]],
        ttft_ms: float | None = None,
        item_id: str | None = None,
        answer_model: str | None = None,
        cost_nusd: int | None = None,
        discounted: bool = False,
    ) -> float | None:
        """A gateway call's decision (``decision_row``, from :meth:`decide_call`), its outcome,
        and its sample when the decision is sampled and the call gave an answer (status ok,
        with input messages and output text), handed to the batch writer together: no I/O, one
        transaction. Priced like a reported
        outcome (:func:`router.outcomes.outcome_values`). A usage object the upstream sent
        that cannot be read is kept in ``usage_raw`` and the call stays unpriced (logged).
        ``attempts`` are the upstream calls in order; ``ttft_ms`` the time to the first
        streamed chunk, ms; ``answer_model`` the model whose answer a shadow-mode sample
        grades (:class:`router.models.Sample`); ``cost_nusd`` the cost of an answer a gateway
        stage gave (a cache hit: no upstream call), instead of pricing its usage; ``discounted``
        prices the usage less the served model's ``batch_discount`` (an answer from OpenAI's
        flex processing). Returns the cost in nano-USD (None: unpriced).

        Raises:
            NoPolicy: no routing policy applied yet (503).
        """
        snapshot = self.snapshot
        report = replace(report, served_model=snapshot.canonical(report.served_model))
        readable = True
        try:
            usage = normalize_usage(report.usage)
        except InvalidInput as exc:
            log.warning("%s: unreadable upstream usage, unpriced: %s", decision.decision_id, exc)
            usage, readable = Usage(), False
        now = utcnow()
        row = outcome_values(
            snapshot, decision.task_class, report, usage, now, decision_row["created_at"]
        )
        if discounted and row["cost_nusd"] is not None:
            price = snapshot.price_at(report.served_model, decision_row["created_at"])
            if price is not None:
                row["cost_nusd"] = cost_nusd_of(usage, price, discount=price.batch_discount)
        if not readable:
            row["cost_nusd"] = None
        if cost_nusd is not None:
            row["cost_nusd"] = cost_nusd
        row["attempts"] = attempts
        row["ttft_ms"] = ttft_ms
        self.writer.add(Decision, decision_row)
        self.writer.add(Outcome, row)
        self.metrics.decided(decision.task_class, decision.model, decision.sampled)
        self.metrics.outcome("gateway", report.status, row["cost_nusd"])
        settings = snapshot.policy.settings_for(decision.task_class)
        text = (
            stored_text(
                retention_days=settings.text_retention_days,
                redactor=settings.redactor,
                input_messages=report.input_messages,
                output_text=report.output_text,
            )
            if (
                decision.sampled
                and report.status == "ok"
                and report.output_text is not None
                and report.input_messages
            )
            else None
        )
        if text is not None:
            self.writer.add(
                Sample,
                {
                    "decision_id": decision.decision_id,
                    "task_class": decision.task_class,
                    "model": report.served_model,
                    "input_messages": text[0],
                    "output_text": text[1],
                    "meta": None,
                    "item_id": item_id,
                    "answer_model": answer_model,
                    "status": "queued",
                    "attempts": 0,
                    "decided_at": decision_row["created_at"],
                    "created_at": now,
                },
            )
        cost: int | None = row["cost_nusd"]
        return cost

    async def flush(self) -> int:
        """Write what the batch writer holds now; returns how many rows were written.

        Raises:
            DBAPIError | OSError: the database could not be reached; the rows are kept.
        """
        return await self.writer.flush()

    async def _register_classes(self, session: AsyncSession, batch: Batch) -> None:
        """Inside each batch's transaction: add its classes to the class registry (a class
        already there is kept; registered with the batch, so a failed write retries both)."""
        decisions = (row for table, row in batch if table is Decision)
        await repository.register_classes(session, repository.first_seen(decisions))

    def _buffered_decisions(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        found = self.writer.pending(Decision, set(ids))
        return {str(k): row for k, row in found.items()}

    # ---- outcomes -------------------------------------------------------------------------
    async def record_outcomes(
        self, reports: Sequence[OutcomeReport], *, labels: Sequence[str] | None = None
    ) -> list[OutcomeResult]:
        """Store outcome reports, price them, queue sampled text, in one transaction
        (:func:`router.outcomes.record_outcomes`). A decision this process made moments ago and
        has not written yet is written with its outcome; the batch writer is not flushed.

        While the writer spools (the database is unreachable) the reports are spooled with
        it when every decision is one this process remembers (:func:`spool_outcomes`); the
        call returns once they are on disk.

        Raises:
            NotFound: a decision id is unknown (404, field ``[i].decision_id``).
            InvalidInput: a usage count is not a whole number >= 0 (422).
            Unavailable: the database is unreachable and the reports cannot be spooled (a
                decision not known here, or the spool is full) (503, ``Retry-After``).
        """
        if self.writer.spooling:
            return await self._spool_outcomes(reports, labels)
        try:
            async with self._sessions() as session:
                results = await record_outcomes(
                    session,
                    self.snapshot,
                    reports,
                    buffered=self._buffered_decisions,
                    labels=labels,
                )
                await session.commit()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            self.health.failed("writes", exc)
            if await self.writer.begin_spooling():  # the spool takes them, and what follows
                return await self._spool_outcomes(reports, labels)
            raise Unavailable(
                "the database is unreachable; the outcomes were not stored: retry later",
                retry_after_s=self.retry_after_s,
            ) from exc
        self.health.ok("writes")
        self.metrics.outcomes_reported(reports, results)
        return results

    async def _spool_outcomes(
        self, reports: Sequence[OutcomeReport], labels: Sequence[str] | None
    ) -> list[OutcomeResult]:
        self.writer.check_room()
        rows, results = spool_outcomes(
            self.snapshot,
            reports,
            self._known,
            labels=labels,
            retry_after_s=self.retry_after_s,
        )
        for table, row in rows:
            self.writer.add(table, row)
        await self.writer.durable()
        return results

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the snapshot and start the poller and the batch writer."""
        await self.refresh(force=True)
        self._stopping.clear()
        await self.writer.start()
        self._poller = asyncio.create_task(self._poll(), name="snapshot-poll")

    async def stop(self) -> None:
        """Stop the poller and the batch writer (each finishes what it is doing: no write is
        cut in half) and write what is buffered.

        Raises:
            DBAPIError | OSError: the final write failed; the rows stay buffered.
        """
        self._stopping.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.writer.stop()

    async def _poll(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.refresh()
            except Exception as exc:
                if not is_connection_error(exc):
                    log.exception("snapshot poll failed; retrying in %.1f s", self._poll_interval_s)
                else:
                    self.health.failed("snapshot", exc)
            else:
                self.health.ok("snapshot")
