"""The batch lane's work: create a caller's batch, submit its lines upstream, read them back.

**Create** (:meth:`Lane.create_batch`): every line of the input file is checked
(:func:`router.lane.files.parse_input`) and routed like a gateway call; a line whose model has
no batch API refuses the whole file. The decisions, the batch and one :class:`LaneItem` per
line are written in one transaction, so what was acknowledged survives a restart and nothing
of a refused file is kept or sent.

**Submit** (:meth:`Lane.submit`, the ``lane-submit`` job): queued items are grouped per caller
batch and routed model into provider batches within the provider's limits. A group is claimed
first, in its own transaction (a :class:`LaneUpstream` row whose ``key`` is unique, and a
conditional update of the items from ``queued`` to ``submitting``): a second process finds the
items taken and submits nothing, so an upstream batch is never submitted twice. Then the
provider is called; its batch id is written with the items' new status. A submission whose
process died between the two is ``unknown`` after :data:`SUBMIT_LEASE_S`: it may have reached
the provider, so its items are reported failed (``submission_unknown``), never sent again.

**Poll** (:meth:`Lane.poll`, the ``lane-poll`` job): each submitted upstream batch is looked at
once; when it ended, every item gets its result by upstream custom id (``t<item id>``, whatever
the order): an answer is stored with its outcome, priced at the model's batch discount and
booked once (one outcome per decision), and sampled for grading like any answer; an expired,
cancelled or transiently failed item is queued again until it used ``max_attempts``, then
reported as expired or failed in the error file. A caller batch whose items all ended gets its
output and error files, in its own custom ids and line order, and its final status.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router import repository
from router.db import utcnow
from router.errors import Conflict, InvalidInput, NotFound, error_body
from router.gateway.service import Call, answer_text
from router.lane.files import BATCH_ENDPOINT, BadBatchInput, parse_input
from router.models import Decision, LaneBatch, LaneFile, LaneItem, LaneUpstream
from router.offpeak import next_open, parse_window, zone
from router.outcomes import OutcomeReport, outcome_values
from router.pricing import Usage, cost_nusd, normalize_usage
from router.providers.base import Completion, Provider, ProviderError
from router.providers.batch import BatchItemError, BodyItem, plan_batches
from router.service import Router

log = logging.getLogger(__name__)

Upstream = Callable[[str], tuple[Provider, str]]
"""Catalog model name -> (the adapter that serves it, the model id to send it)."""

COMPLETION_WINDOW = "24h"
"""The one completion window the providers offer (OpenAI Batch API; Anthropic's is 24 h too)."""

WINDOW = timedelta(hours=24)

SUBMIT_LEASE_S = 600.0
"""A claimed submission whose provider call never came back is ``unknown`` after this, s."""

MAX_FILE_BYTES = 200 * 1024 * 1024
"""Bytes of one uploaded file (OpenAI Batch API: input files up to 200 MB)."""

ENDED = ("succeeded", "failed", "expired", "cancelled")
"""Item statuses that are final."""


@dataclass
class LaneRun:
    """What one submit or poll run did: provider batches submitted and ended, items sent,
    answered, failed, expired, cancelled and queued again, caller batches finished, the
    serving cost booked (nano-USD; unpriced answers are not in it) and webhooks delivered."""

    submitted: int = 0
    items_sent: int = 0
    ended: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    requeued: int = 0
    finished: int = 0
    cost_nusd: int = 0
    webhooks: int = 0


def _epoch(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def file_object(f: LaneFile) -> dict[str, Any]:
    """OpenAI's file object (API reference, "The file object")."""
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.size,
        "created_at": _epoch(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": None,
    }


def _upstream_id(item: LaneItem) -> str:
    """The custom id an item goes upstream under (Anthropic's ``[a-zA-Z0-9_-]{1,64}`` fits)."""
    return f"t{item.id}"


class Lane:
    """The batch lane over ``router`` (snapshot, decisions), ``sessions`` and ``upstream``.

    Args:
        max_attempts: upstream submissions an item gets before an expiry or a transient error
            is final (reported in the error file).
        max_file_bytes: the largest upload, bytes.
        flush_size: deferred calls of one model sent together as soon as this many wait.
        max_wait_s: else the oldest waits at most this long (s) before they are sent.
        webhook_hosts: the hosts (``host`` or ``host:port``) a deferred call's webhook may
            name; empty: webhooks are refused.
        clock: now, UTC.
    """

    def __init__(
        self,
        router: Router,
        sessions: async_sessionmaker[AsyncSession],
        upstream: Upstream,
        *,
        max_attempts: int = 3,
        max_file_bytes: int = MAX_FILE_BYTES,
        flush_size: int = 1000,
        max_wait_s: float = 30.0,
        webhook_hosts: Sequence[str] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._router = router
        self._sessions = sessions
        self._upstream = upstream
        self._max_attempts = max_attempts
        self._max_file_bytes = max_file_bytes
        self._flush_size = flush_size
        self._max_wait = timedelta(seconds=max_wait_s)
        self._webhook_hosts = frozenset(h.lower() for h in webhook_hosts)
        self._clock = clock

    # ---- files -------------------------------------------------------------------------------
    async def create_file(
        self, caller: str | None, filename: str, purpose: str, data: bytes
    ) -> dict[str, Any]:
        """Store an uploaded file; its file object.

        Raises:
            BadBatchInput: ``purpose`` is not ``batch``, or the file is empty or larger than
                ``max_file_bytes`` (field ``purpose`` / ``file``).
        """
        if purpose != "batch":
            raise BadBatchInput(f"purpose must be 'batch', not {purpose!r}", field="purpose")
        if not data:
            raise BadBatchInput("the file is empty", field="file")
        if len(data) > self._max_file_bytes:
            raise BadBatchInput(
                f"the file is {len(data):,} bytes, over the {self._max_file_bytes:,} allowed",
                field="file",
            )
        row = LaneFile(
            id=f"file-{uuid.uuid4().hex[:24]}",
            purpose=purpose,
            filename=filename[:256] or "input.jsonl",
            size=len(data),
            content=data,
            caller=caller,
            created_at=self._clock(),
        )
        async with self._sessions() as session:
            session.add(row)
            await session.commit()
            return file_object(row)

    async def file(self, caller: str | None, file_id: str) -> LaneFile:
        """The caller's file ``file_id``.

        Raises:
            NotFound: no such file of this caller (404, field ``file_id``).
        """
        async with self._sessions() as session:
            row = await session.get(LaneFile, file_id)
        if row is None or row.caller != caller:
            raise NotFound(f"no file {file_id!r}", field="file_id")
        return row

    # ---- batches -----------------------------------------------------------------------------
    async def create_batch(
        self,
        caller: str | None,
        input_file_id: str,
        *,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Route every line of the caller's input file and queue it; the batch object.

        Raises:
            BadBatchInput: ``endpoint`` is not ``/v1/chat/completions``, the window is not
                ``24h``, the file is not a batch input file, or a line is invalid, names an
                unknown model, or routes to a model whose provider has no batch API (``field``
                ``line N: ...``). Nothing is stored then.
            NotFound: no such input file (field ``input_file_id``).
            NoPolicy: no routing policy applied yet (503).
        """
        if endpoint != BATCH_ENDPOINT:
            raise BadBatchInput(f"endpoint must be '{BATCH_ENDPOINT}'", field="endpoint")
        if completion_window != COMPLETION_WINDOW:
            raise BadBatchInput(
                f"completion_window must be '{COMPLETION_WINDOW}'", field="completion_window"
            )
        try:
            source = await self.file(caller, input_file_id)
        except NotFound as exc:
            raise NotFound(exc.message, field="input_file_id") from exc
        snapshot = self._router.snapshot
        lines = parse_input(source.content, snapshot)
        now = self._clock()
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        decisions: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        for line in lines:
            call = line.call
            decision, row = self._router.decide_call(
                call.task_type,
                call.input_tokens,
                call.has_tools,
                None,
                caller=caller,
                shadow=call.shadow_model is not None,
                at=now,
            )
            model = call.shadow_model or decision.model
            self._batch_capable(
                model,
                f"input file line {line.line}",
                f"line {line.line}: body.model",
                call.body,
            )
            decisions.append(row)
            items.append(
                {
                    "batch_id": batch_id,
                    "custom_id": line.custom_id,
                    "line": line.line,
                    "decision_id": decision.decision_id,
                    "task_class": decision.task_class,
                    "model": model,
                    "provider": snapshot.provider_of(model),
                    "body": call.body,
                    "status": "queued",
                    "attempts": 0,
                    "queued_at": now,
                }
            )
        batch = LaneBatch(
            id=batch_id,
            caller=caller,
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            meta=metadata,
            status="in_progress",
            total=len(items),
            created_at=now,
            expires_at=now + WINDOW,
        )
        async with self._sessions() as session:
            await repository.insert_decisions(session, decisions)
            session.add(batch)
            await session.flush()
            await session.exec(sa.insert(LaneItem), params=items)
            await session.commit()
            return await self._batch_object(session, batch)

    async def _owned(self, session: AsyncSession, caller: str | None, batch_id: str) -> LaneBatch:
        batch = await session.get(LaneBatch, batch_id)
        if batch is None or batch.caller != caller:
            raise NotFound(f"no batch {batch_id!r}", field="batch_id")
        return batch

    async def batch(self, caller: str | None, batch_id: str) -> dict[str, Any]:
        """The caller's batch object (OpenAI "The batch object").

        Raises:
            NotFound: no such batch of this caller (404, field ``batch_id``).
        """
        async with self._sessions() as session:
            return await self._batch_object(session, await self._owned(session, caller, batch_id))

    async def batches(
        self, caller: str | None, *, limit: int = 20, after: str | None = None
    ) -> dict[str, Any]:
        """The caller's batches, newest first, as OpenAI's list object (``data``,
        ``first_id``, ``last_id``, ``has_more``); ``after`` a batch id of the last page."""
        async with self._sessions() as session:
            stmt = select(LaneBatch).where(LaneBatch.caller == caller)
            if after is not None:
                mark = await session.get(LaneBatch, after)
                if mark is not None:
                    stmt = stmt.where(
                        sa.or_(
                            col(LaneBatch.created_at) < mark.created_at,
                            sa.and_(
                                col(LaneBatch.created_at) == mark.created_at,
                                col(LaneBatch.id) < mark.id,
                            ),
                        )
                    )
            stmt = stmt.order_by(col(LaneBatch.created_at).desc(), col(LaneBatch.id).desc())
            rows = list((await session.exec(stmt.limit(limit + 1))).all())
            data = [await self._batch_object(session, b) for b in rows[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }

    async def cancel(self, caller: str | None, batch_id: str) -> dict[str, Any]:
        """Cancel the caller's batch: queued items are cancelled at once; provider batches
        already submitted are asked to cancel by the next poll (they end with what they did).
        A batch that already ended is returned as it is.

        Raises:
            NotFound: no such batch of this caller (404, field ``batch_id``).
        """
        now = self._clock()
        async with self._sessions() as session:
            batch = await self._owned(session, caller, batch_id)
            moved = await session.exec(
                sa.update(LaneBatch)
                .where(col(LaneBatch.id) == batch_id, col(LaneBatch.status) == "in_progress")
                .values(status="cancelling", cancelling_at=now)
            )
            if moved.rowcount == 1:
                await session.refresh(batch)
                await session.exec(
                    sa.update(LaneItem)
                    .where(col(LaneItem.batch_id) == batch_id, col(LaneItem.status) == "queued")
                    .values(
                        status="cancelled",
                        ended_at=now,
                        error={"code": "batch_cancelled", "message": "the batch was cancelled"},
                    )
                )
                await session.exec(
                    sa.update(LaneUpstream)
                    .where(
                        col(LaneUpstream.id).in_(
                            select(LaneItem.upstream_id).where(
                                col(LaneItem.batch_id) == batch_id,
                                col(LaneItem.status) == "submitted",
                            )
                        ),
                        col(LaneUpstream.status) == "submitted",
                    )
                    .values(cancel_requested=True)
                )
                await self._finish(session, batch, now)
                await session.commit()
            return await self._batch_object(session, batch)

    def _batch_capable(
        self, model: str, where: str, field: str, body: dict[str, Any] | None = None
    ) -> None:
        """Raises BadBatchInput unless ``model``'s provider has a batch API and can express
        ``body`` (the adapter's own translation is run once, so a request it cannot send, such
        as ``n > 1`` to Anthropic, is refused now, not at submit with the rest of its batch)."""
        try:
            adapter, api_model = self._upstream(model)
        except (InvalidInput, ProviderError) as exc:
            raise BadBatchInput(
                f"{where}: {model} cannot be sent: {exc.message}", field=field
            ) from exc
        if adapter.batch_limits is None:
            raise BadBatchInput(
                f"{where}: {model}'s provider ({adapter.name}) has no batch API", field=field
            )
        if body is not None:
            try:
                adapter.chat_batch_size_of(("t0", {**body, "model": api_model}))
            except InvalidInput as exc:
                raise BadBatchInput(
                    f"{where}: {adapter.name} cannot take this request: {exc.message}",
                    field=f"{field.rsplit('.', 1)[0]}.{exc.field}" if exc.field else field,
                ) from exc

    def check_webhook(self, url: str) -> str:
        """``url`` if a deferred call may name it as its webhook: ``http`` or ``https``, its
        host (or host:port) among ``webhook_hosts`` (an allowlist, so a caller cannot make
        tierwise POST to any address it can reach).

        Raises:
            BadBatchInput: webhooks are off, the URL is malformed, or its host is not allowed
                (field ``x-tierwise-webhook``).
        """
        field = "x-tierwise-webhook"
        if not self._webhook_hosts:
            raise BadBatchInput(
                "webhooks are off: list the hosts they may call in TIERWISE_LANE_WEBHOOK_HOSTS",
                field=field,
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise BadBatchInput(f"{field}: not a URL: {exc}", field=field) from exc
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host or len(url) > 2048:
            raise BadBatchInput(f"{field}: not an http(s) URL: {url[:200]!r}", field=field)
        with_port = f"{host}:{port}" if port else host
        if host not in self._webhook_hosts and with_port not in self._webhook_hosts:
            raise BadBatchInput(
                f"{field}: host {with_port!r} is not in TIERWISE_LANE_WEBHOOK_HOSTS", field=field
            )
        return url

    async def defer(
        self, call: Call, caller: str | None, *, webhook: str | None = None
    ) -> dict[str, Any]:
        """Queue one gateway call on the batch lane (its decision written with it); the
        batch object of kind ``deferred`` with ``result_url`` (``GET`` it for the answer) and
        ``not_before`` (Unix s: an off-peak class's window opens then; None: within
        ``max_wait_s``). The call must not stream.

        ``webhook`` (checked by :meth:`check_webhook`) is POSTed the result once the call ended
        (:meth:`deliver_webhooks`).

        Raises:
            BadBatchInput: the call streams, its model's provider has no batch API or cannot
                express it (it could never be sent: refused at once, not queued), or the
                webhook is not allowed.
            Conflict: its decision id (from ``X-Tierwise-Request-Id``) is taken (409).
        """
        if webhook is not None:
            self.check_webhook(webhook)
        if call.request.stream:
            raise BadBatchInput("a call on the batch lane cannot stream", field="stream")
        decision = call.decision
        model = call.chain[0]
        self._batch_capable(model, f"class {decision.task_class}", "model", call.body)
        now = self._clock()
        settings = self._router.snapshot.policy.settings_for(decision.task_class)
        not_before = None
        if settings.lane_off_peak:
            window = parse_window(settings.off_peak_window)
            opens = next_open(now, window, zone(settings.lane_timezone))
            not_before = opens if opens > now else None
        batch = LaneBatch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            kind="deferred",
            caller=caller,
            input_file_id="",
            endpoint=BATCH_ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            status="in_progress",
            total=1,
            created_at=now,
            expires_at=(not_before or now) + WINDOW,
            webhook_url=webhook,
            webhook_state=None if webhook is None else "pending",
        )
        item = LaneItem(
            batch_id=batch.id,
            custom_id=call.request.request_id or decision.decision_id,
            line=1,
            decision_id=decision.decision_id,
            task_class=decision.task_class,
            model=model,
            provider=self._router.snapshot.provider_of(model),
            body=call.body,
            queued_at=now,
            not_before=not_before,
        )
        call.recorded = True  # the lane writes the decision, and the outcome when answered
        async with self._sessions() as session:
            try:
                taken = await session.exec(
                    select(func.count()).where(col(Decision.id) == decision.decision_id)
                )
                if taken.one():
                    raise sa.exc.IntegrityError("decision id taken", None, ValueError())
                await repository.insert_decisions(session, [call.decision_row])
                session.add(batch)
                await session.flush()
                session.add(item)
                await session.commit()
            except sa.exc.IntegrityError as exc:
                raise Conflict(
                    f"{decision.decision_id} is already queued or answered: send a new "
                    "X-Tierwise-Request-Id for each call",
                    field="x-tierwise-request-id",
                ) from exc
            obj = await self._batch_object(session, batch)
        return {
            **obj,
            "result_url": f"/v1/batches/{batch.id}/result",
            "not_before": _epoch(not_before),
        }

    async def result(self, caller: str | None, batch_id: str) -> tuple[int, dict[str, Any]]:
        """A deferred call's answer: (200, the chat completion) once answered; (202, ``{"id",
        "status", "not_before"}``) while it waits; (502, the error object) when it failed,
        expired or was cancelled.

        Raises:
            NotFound: no such batch of this caller (field ``batch_id``).
            BadBatchInput: a caller batch (its answers are in its output file).
        """
        async with self._sessions() as session:
            batch = await self._owned(session, caller, batch_id)
            if batch.kind != "deferred":
                raise BadBatchInput(
                    f"{batch_id} is a batch of an input file: read its output_file_id",
                    field="batch_id",
                )
            item = (await session.exec(select(LaneItem).where(LaneItem.batch_id == batch_id))).one()
        if item.status == "succeeded":
            return 200, dict(item.response or {})
        if item.status not in ENDED:
            waiting = {"id": batch_id, "status": item.status, "not_before": _epoch(item.not_before)}
            return 202, waiting
        error = dict(item.error or {})
        return 502, {
            "error": error_body(
                str(error.get("code") or item.status),
                str(error.get("message") or item.status),
                None,
                502,
            )
        }

    async def _counts(self, session: AsyncSession, batch_id: str) -> dict[str, int]:
        rows = await session.exec(
            select(LaneItem.status, func.count())
            .where(LaneItem.batch_id == batch_id)
            .group_by(col(LaneItem.status))
        )
        return {status: n for status, n in rows.all()}

    async def _batch_object(self, session: AsyncSession, batch: LaneBatch) -> dict[str, Any]:
        counts = await self._counts(session, batch.id)
        ended = batch.ended_at
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": _epoch(batch.created_at),
            "in_progress_at": _epoch(batch.created_at),
            "expires_at": _epoch(batch.expires_at),
            "finalizing_at": None,
            "completed_at": _epoch(ended) if batch.status == "completed" else None,
            "failed_at": None,
            "expired_at": _epoch(ended) if batch.status == "expired" else None,
            "cancelling_at": _epoch(batch.cancelling_at),
            "cancelled_at": _epoch(ended) if batch.status == "cancelled" else None,
            "request_counts": {
                "total": batch.total,
                "completed": counts.get("succeeded", 0),
                "failed": sum(counts.get(s, 0) for s in ("failed", "expired", "cancelled")),
            },
            "metadata": batch.meta,
        }

    async def _finish(self, session: AsyncSession, batch: LaneBatch, now: datetime) -> bool:
        """When every item of ``batch`` ended: its output and error files and final status
        (``cancelled`` if it was being cancelled, ``expired`` if an item expired for good,
        else ``completed``). Returns whether it finished now."""
        if batch.ended_at is not None:
            return False
        counts = await self._counts(session, batch.id)
        if any(status not in ENDED for status in counts):
            return False
        items = (
            await session.exec(
                select(LaneItem).where(LaneItem.batch_id == batch.id).order_by(col(LaneItem.line))
            )
        ).all()
        output: list[str] = []
        errors: list[str] = []
        for item in items:
            line_id = f"batch_req_{batch.id[6:]}_{item.line}"
            if item.status == "succeeded":
                body = item.response or {}
                line = {
                    "id": line_id,
                    "custom_id": item.custom_id,
                    "response": {"status_code": 200, "request_id": item.decision_id, "body": body},
                    "error": None,
                }
                output.append(json.dumps(line, ensure_ascii=False))
            else:
                error = item.error or {"code": "failed", "message": item.status}
                status = error.get("status")
                line = {
                    "id": line_id,
                    "custom_id": item.custom_id,
                    "response": (
                        {
                            "status_code": status,
                            "request_id": item.decision_id,
                            "body": {"error": {"message": error.get("message")}},
                        }
                        if isinstance(status, int)
                        else None
                    ),
                    "error": {"code": error.get("code"), "message": error.get("message")},
                }
                errors.append(json.dumps(line, ensure_ascii=False))
        for rows, kind in ((output, "output"), (errors, "error")):
            if not rows:
                continue
            data = ("\n".join(rows) + "\n").encode()
            f = LaneFile(
                id=f"file-{uuid.uuid4().hex[:24]}",
                purpose="batch_output",
                filename=f"{batch.id}_{kind}.jsonl",
                size=len(data),
                content=data,
                caller=batch.caller,
                batch_id=batch.id,
                created_at=now,
            )
            session.add(f)
            if kind == "output":
                batch.output_file_id = f.id
            else:
                batch.error_file_id = f.id
        if batch.status == "cancelling":
            batch.status = "cancelled"
        elif counts.get("expired", 0):
            batch.status = "expired"
        else:
            batch.status = "completed"
        batch.ended_at = now
        session.add(batch)
        return True

    # ---- submit ------------------------------------------------------------------------------
    async def submit(self, now: datetime | None = None, *, flush: bool = False) -> LaneRun:
        """One submit run (see the module doc): stale claims become ``unknown``; each queued
        (caller batch, model) group is claimed and sent as provider batches within limits;
        deferred calls are sent per model once the flush rule says so (:meth:`_ready`), or
        with ``flush`` at once (off-peak windows still hold)."""
        now = now or self._clock()
        run = LaneRun()
        await self._expire_claims(now, run)
        async with self._sessions() as session:
            groups = (
                await session.exec(
                    select(LaneItem.batch_id, LaneItem.model)
                    .join(LaneBatch, col(LaneBatch.id) == col(LaneItem.batch_id))
                    .where(
                        LaneItem.status == "queued",
                        LaneBatch.kind == "batch",
                        LaneBatch.status == "in_progress",
                    )
                    .group_by(col(LaneItem.batch_id), col(LaneItem.model))
                )
            ).all()
            deferred = (
                await session.exec(
                    select(LaneItem)
                    .join(LaneBatch, col(LaneBatch.id) == col(LaneItem.batch_id))
                    .where(LaneItem.status == "queued", LaneBatch.kind == "deferred")
                    .order_by(col(LaneItem.id))
                )
            ).all()
        for batch_id, model in groups:
            await self._submit_group(model, now, run, batch_id=batch_id)
        by_model: dict[str, list[LaneItem]] = {}
        for item in deferred:
            by_model.setdefault(item.model, []).append(item)
        for model, items in sorted(by_model.items()):
            ready = await self._ready(items, now, flush=flush)
            if ready:
                await self._submit_group(model, now, run, only=ready)
        return run

    async def _ready(
        self, items: Sequence[LaneItem], now: datetime, *, flush: bool = False
    ) -> list[LaneItem]:
        """Deferred items of one model to send now: those whose off-peak window is open (an
        item whose window closed before it was sent waits for the next opening), and only
        when they are ``flush_size`` or more or the oldest has waited ``max_wait_s``."""
        policy = self._router.snapshot.policy
        eligible: list[LaneItem] = []
        later: dict[int, datetime] = {}
        for item in items:
            settings = policy.settings_for(item.task_class)
            if settings.lane_off_peak:
                window = parse_window(settings.off_peak_window)
                opens = next_open(now, window, zone(settings.lane_timezone))
                if opens > now:
                    if item.not_before != opens:
                        later[int(item.id or 0)] = opens
                    continue
            elif item.not_before is not None and item.not_before > now:
                continue
            eligible.append(item)
        if later:
            async with self._sessions() as session:
                for item_id, opens in later.items():
                    await session.exec(
                        sa.update(LaneItem)
                        .where(col(LaneItem.id) == item_id)
                        .values(not_before=opens)
                    )
                await session.commit()
        if not eligible:
            return []
        oldest = min(max(i.queued_at, i.not_before or i.queued_at) for i in eligible)
        if flush or len(eligible) >= self._flush_size or now - oldest >= self._max_wait:
            return eligible
        return []

    async def _expire_claims(self, now: datetime, run: LaneRun) -> None:
        stale = now - timedelta(seconds=SUBMIT_LEASE_S)
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(LaneUpstream).where(
                        LaneUpstream.status == "submitting", col(LaneUpstream.created_at) < stale
                    )
                )
            ).all()
            for up in rows:
                log.error(
                    "lane: submission %s of %d %s items never came back from the provider; "
                    "it may have been submitted, so its items are reported failed, not resent",
                    up.key[:12],
                    up.items,
                    up.model,
                )
                up.status = "unknown"
                session.add(up)
                result = await session.exec(
                    sa.update(LaneItem)
                    .where(col(LaneItem.upstream_id) == up.id, col(LaneItem.status) == "submitting")
                    .values(
                        status="failed",
                        ended_at=now,
                        error={
                            "code": "submission_unknown",
                            "message": "the submission to the provider was interrupted; it "
                            "may or may not have run, so it was not sent again",
                        },
                    )
                )
                run.failed += result.rowcount
            await self._finish_touched(session, await self._batches_of(session, rows), now, run)
            await session.commit()

    async def _batches_of(self, session: AsyncSession, ups: Sequence[LaneUpstream]) -> set[str]:
        """The caller batches whose items ``ups`` hold."""
        if not ups:
            return set()
        rows = await session.exec(
            select(LaneItem.batch_id).where(col(LaneItem.upstream_id).in_([u.id for u in ups]))
        )
        return set(rows.all())

    async def _finish_touched(
        self, session: AsyncSession, batch_ids: set[str], now: datetime, run: LaneRun
    ) -> None:
        for batch_id in sorted(batch_ids):
            batch = await session.get(LaneBatch, batch_id)
            if batch is not None and await self._finish(session, batch, now):
                run.finished += 1

    async def _submit_group(
        self,
        model: str,
        now: datetime,
        run: LaneRun,
        *,
        batch_id: str | None = None,
        only: Sequence[LaneItem] | None = None,
    ) -> None:
        """Send the queued items of caller batch ``batch_id`` for ``model``, or ``only``
        these (deferred calls of ``model``)."""
        adapter, api_model = self._upstream(model)
        limits = adapter.batch_limits
        if only is not None:
            queued: Sequence[LaneItem] = only
        else:
            async with self._sessions() as session:
                queued = (
                    await session.exec(
                        select(LaneItem)
                        .where(
                            LaneItem.batch_id == batch_id,
                            LaneItem.model == model,
                            LaneItem.status == "queued",
                        )
                        .order_by(col(LaneItem.id))
                    )
                ).all()
        if not queued:
            return
        if limits is None:  # the catalog changed since create: it can never be sent
            await self._fail_items(
                list(queued),
                "model_unavailable",
                f"{model}'s provider ({adapter.name}) has no batch API now",
                now,
                run,
            )
            return
        by_id = {_upstream_id(item): item for item in queued}
        bodies: list[BodyItem] = [
            (_upstream_id(item), {**item.body, "model": api_model}) for item in queued
        ]

        sendable: list[BodyItem] = []
        for entry in bodies:  # one the adapter cannot express fails alone, not its batch
            try:
                adapter.chat_batch_size_of(entry)
            except InvalidInput as exc:
                await self._fail_items([by_id[entry[0]]], "invalid_request", exc.message, now, run)
                continue
            sendable.append(entry)
        try:
            planned = plan_batches(sendable, limits, adapter.chat_batch_size_of)
        except InvalidInput as exc:
            await self._fail_items(
                [by_id[c] for c, _ in sendable], "invalid_request", exc.message, now, run
            )
            return
        for chunk in planned:
            items = [by_id[custom_id] for custom_id, _ in chunk]
            claimed = await self._claim(items, adapter.name, model, now)
            if claimed is None:
                continue
            try:
                provider_batch_id = await adapter.submit_chat_batch(chunk)
            except (ProviderError, InvalidInput) as exc:
                transient = isinstance(exc, ProviderError) and exc.transient
                await self._unclaim(claimed, items, exc, transient, now, run)
                if transient:
                    return
                continue
            async with self._sessions() as session:
                moved = await session.exec(
                    sa.update(LaneUpstream)
                    .where(
                        col(LaneUpstream.id) == claimed, col(LaneUpstream.status) == "submitting"
                    )
                    .values(
                        status="submitted",
                        provider_status="submitted",
                        provider_batch_id=provider_batch_id,
                        submitted_at=self._clock(),
                    )
                )
                if moved.rowcount != 1:  # reported unknown meanwhile: its items are failed
                    await session.rollback()
                    log.error(
                        "lane: batch %s came back after its claim expired; its items were "
                        "reported failed, so it is cancelled",
                        provider_batch_id,
                    )
                    try:
                        await adapter.cancel_batch(provider_batch_id)
                    except ProviderError as exc:
                        log.warning("lane: batch %s not cancelled: %s", provider_batch_id, exc)
                    continue
                await session.exec(
                    sa.update(LaneItem)
                    .where(
                        col(LaneItem.upstream_id) == claimed, col(LaneItem.status) == "submitting"
                    )
                    .values(status="submitted", attempts=LaneItem.attempts + 1)
                )
                await session.commit()
            run.submitted += 1
            run.items_sent += len(items)
            log.info(
                "lane: %d %s items of %s submitted as %s batch %s",
                len(items),
                model,
                batch_id or "deferred calls",
                adapter.name,
                provider_batch_id,
            )

    async def _claim(
        self, items: Sequence[LaneItem], provider: str, model: str, now: datetime
    ) -> int | None:
        """Claim ``items`` for one submission; its upstream row id, or None when another
        process holds any of them (nothing is claimed then)."""
        ids = sorted(int(item.id or 0) for item in items)
        key = hashlib.sha256(
            ",".join(f"{i}:{item.attempts}" for i, item in zip(ids, items, strict=True)).encode()
        ).hexdigest()
        async with self._sessions() as session:
            try:
                up = LaneUpstream(
                    key=key, provider=provider, model=model, items=len(ids), created_at=now
                )
                session.add(up)
                await session.flush()
                result = await session.exec(
                    sa.update(LaneItem)
                    .where(col(LaneItem.id).in_(ids), col(LaneItem.status) == "queued")
                    .values(status="submitting", upstream_id=up.id)
                )
                if result.rowcount != len(ids):
                    await session.rollback()
                    return None
                await session.commit()
            except sa.exc.IntegrityError:
                await session.rollback()
                return None
            return up.id

    async def _unclaim(
        self,
        upstream_id: int,
        items: Sequence[LaneItem],
        exc: ProviderError | InvalidInput,
        transient: bool,
        now: datetime,
        run: LaneRun,
    ) -> None:
        """A submission the provider refused: transient -> the items are queued again (the
        claim row is dropped); permanent -> they fail with the provider's message."""
        log.warning("lane: %d items not submitted: %s", len(items), exc.message)
        async with self._sessions() as session:
            if transient:
                await session.exec(
                    sa.update(LaneItem)
                    .where(col(LaneItem.upstream_id) == upstream_id)
                    .values(status="queued", upstream_id=None)
                )
                await session.exec(
                    sa.delete(LaneUpstream).where(col(LaneUpstream.id) == upstream_id)
                )
            else:
                await session.exec(
                    sa.update(LaneUpstream)
                    .where(col(LaneUpstream.id) == upstream_id)
                    .values(status="ended", provider_status="refused", ended_at=now)
                )
            await session.commit()
        if not transient:
            status = exc.upstream_status if isinstance(exc, ProviderError) else None
            await self._fail_items(
                list(items), "invalid_request", exc.message, now, run, status=status
            )

    async def _fail_items(
        self,
        items: Sequence[LaneItem],
        code: str,
        message: str,
        now: datetime,
        run: LaneRun,
        *,
        status: int | None = None,
    ) -> None:
        async with self._sessions() as session:
            await session.exec(
                sa.update(LaneItem)
                .where(col(LaneItem.id).in_([i.id for i in items]))
                .values(
                    status="failed",
                    ended_at=now,
                    error={"code": code, "message": message[:1000], "status": status},
                )
            )
            run.failed += len(items)
            await self._finish_touched(session, {i.batch_id for i in items}, now, run)
            await session.commit()

    # ---- poll --------------------------------------------------------------------------------
    async def poll(self, now: datetime | None = None) -> LaneRun:
        """One poll run (see the module doc) over every submitted provider batch."""
        now = now or self._clock()
        run = LaneRun()
        async with self._sessions() as session:
            ups = (
                await session.exec(
                    select(LaneUpstream)
                    .where(LaneUpstream.status == "submitted")
                    .order_by(col(LaneUpstream.id))
                )
            ).all()
        for up in ups:
            try:
                await self._poll_one(up, now, run)
            except ProviderError as exc:
                log.warning(
                    "lane: %s batch %s not read: %s", up.provider, up.provider_batch_id, exc.message
                )
        run.webhooks = await self.deliver_webhooks()
        return run

    async def deliver_webhooks(self) -> int:
        """POST each ended deferred call's result to its webhook: ``{"id", "object":
        "tierwise.deferred_result", "status", "result_url", "status_code", "body"}`` (the
        result as :meth:`result` answers it). A 2xx marks it delivered; anything else is tried
        again at the next poll, up to ``max_attempts`` tries, then marked failed (logged).
        Returns the webhooks delivered."""
        async with self._sessions() as session:
            due = (
                await session.exec(
                    select(LaneBatch).where(
                        LaneBatch.webhook_state == "pending",
                        col(LaneBatch.ended_at).is_not(None),
                    )
                )
            ).all()
        delivered = 0
        for batch in due:
            status, body = await self.result(batch.caller, batch.id)
            payload = {
                "id": batch.id,
                "object": "tierwise.deferred_result",
                "status": batch.status,
                "result_url": f"/v1/batches/{batch.id}/result",
                "status_code": status,
                "body": body,
            }
            try:
                async with httpx.AsyncClient(timeout=10.0) as client:
                    reply = await client.post(str(batch.webhook_url), json=payload)
                ok = reply.is_success
                why = f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            attempts = batch.webhook_attempts + 1
            state = "delivered" if ok else "failed" if attempts >= self._max_attempts else "pending"
            if not ok:
                log.warning(
                    "lane: webhook of %s not delivered (%s), try %d", batch.id, why, attempts
                )
            delivered += ok
            async with self._sessions() as session:
                await session.exec(
                    sa.update(LaneBatch)
                    .where(col(LaneBatch.id) == batch.id)
                    .values(webhook_state=state, webhook_attempts=attempts)
                )
                await session.commit()
        return delivered

    async def _poll_one(self, up: LaneUpstream, now: datetime, run: LaneRun) -> None:
        adapter, _ = self._upstream(up.model)
        assert up.provider_batch_id is not None
        if up.cancel_requested:
            try:
                await adapter.cancel_batch(up.provider_batch_id)
            except ProviderError as exc:  # e.g. it already ended: read what it has
                log.warning(
                    "lane: %s batch %s not cancelled: %s", up.provider, up.provider_batch_id, exc
                )
            async with self._sessions() as session:
                await session.exec(
                    sa.update(LaneUpstream)
                    .where(col(LaneUpstream.id) == up.id)
                    .values(cancel_requested=False, provider_status="cancelling")
                )
                await session.commit()
        async with self._sessions() as session:
            items = (
                await session.exec(
                    select(LaneItem).where(
                        LaneItem.upstream_id == up.id, LaneItem.status == "submitted"
                    )
                )
            ).all()
        expected = {_upstream_id(item): item for item in items}
        seen = await adapter.poll_chat_batch(up.provider_batch_id, set(expected))
        if not seen.ended:
            if seen.status != up.provider_status:
                async with self._sessions() as session:
                    await session.exec(
                        sa.update(LaneUpstream)
                        .where(col(LaneUpstream.id) == up.id)
                        .values(provider_status=seen.status[:32])
                    )
                    await session.commit()
            return
        snapshot = self._router.snapshot
        async with self._sessions() as session:
            # Claim the ended batch: a second poller finds it ended and books nothing.
            claimed = await session.exec(
                sa.update(LaneUpstream)
                .where(col(LaneUpstream.id) == up.id, col(LaneUpstream.status) == "submitted")
                .values(status="ended", provider_status=seen.status[:32], ended_at=now)
            )
            if claimed.rowcount != 1:
                await session.rollback()
                return
            decisions = {
                d.id: d
                for d in (
                    await session.exec(
                        select(Decision).where(col(Decision.id).in_([i.decision_id for i in items]))
                    )
                ).all()
            }
            cancelling = {
                b.id
                for b in (
                    await session.exec(
                        select(LaneBatch).where(
                            col(LaneBatch.id).in_({i.batch_id for i in items}),
                            LaneBatch.status == "cancelling",
                        )
                    )
                ).all()
            }
            for custom_id, item in expected.items():
                result = seen.results.get(custom_id)
                if isinstance(result, Completion):
                    run.cost_nusd += await self._answered(
                        session, snapshot, item, decisions[item.decision_id], result, now
                    )
                    run.succeeded += 1
                    continue
                # Missing from an ended batch (a results read that broke off, a failed batch):
                # final, never sent again, since it may have run and been paid for.
                failure = result or BatchItemError(
                    "errored", f"no result in the ended batch ({seen.status})"
                )
                self._failed(item, failure, item.batch_id in cancelling, now, run)
                session.add(item)
            run.ended += 1
            await session.flush()
            await self._finish_touched(session, {i.batch_id for i in items}, now, run)
            await session.commit()

    def _failed(
        self,
        item: LaneItem,
        failure: BatchItemError,
        cancelling: bool,
        now: datetime,
        run: LaneRun,
    ) -> None:
        """An item without an answer: cancelled (its batch is being cancelled), queued again
        (expired, cancelled upstream or transient, with attempts left), else final."""
        retry = failure.kind in ("expired", "canceled") or failure.transient
        if cancelling:
            item.status = "cancelled"
            item.error = {"code": "batch_cancelled", "message": "the batch was cancelled"}
            item.ended_at = now
            run.cancelled += 1
        elif retry and item.attempts < self._max_attempts:
            item.status = "queued"
            item.upstream_id = None
            item.queued_at = now
            run.requeued += 1
        else:
            expired = failure.kind == "expired"
            item.status = "expired" if expired else "failed"
            code = "batch_expired" if expired else "upstream_error"
            item.error = {"code": code, "message": failure.message[:1000], "status": failure.status}
            item.ended_at = now
            if expired:
                run.expired += 1
            else:
                run.failed += 1

    async def _answered(
        self,
        session: AsyncSession,
        snapshot: Any,
        item: LaneItem,
        decision: Decision,
        completion: Completion,
        now: datetime,
    ) -> int:
        """Store an answer: the item, its outcome at the batch price (once per decision) and
        its sample when the decision was sampled. Returns the booked cost, nano-USD (0 when
        unpriced)."""
        item.status = "succeeded"
        item.response = completion.body
        item.ended_at = now
        session.add(item)
        text = _reply_text(completion.body)
        report = OutcomeReport(
            decision_id=item.decision_id,
            served_model=item.model,
            status="ok",
            latency_ms=round((now - decision.created_at).total_seconds() * 1000, 3),
            usage=completion.usage,
            input_messages=list(item.body.get("messages") or []),
            output_text=text,
        )
        try:
            usage = normalize_usage(completion.usage)
            readable = completion.usage is not None
        except InvalidInput as exc:
            log.warning("%s: unreadable upstream usage, unpriced: %s", item.decision_id, exc)
            usage, readable = Usage(), False
        row = outcome_values(snapshot, item.task_class, report, usage, now, decision.created_at)
        price = snapshot.price_at(item.model, decision.created_at)
        priced = readable and price is not None
        row["cost_nusd"] = (
            cost_nusd(usage, price, discount=price.batch_discount) if priced and price else None
        )
        item.realtime_cost_nusd = cost_nusd(usage, price) if priced else None
        row["attempts"] = [
            {"model": item.model, "status": "ok", "lane": "batch", "attempt": item.attempts}
        ]
        await repository.insert_outcome(session, **row)
        if decision.sampled and text is not None and report.input_messages:
            await repository.queue_sample(
                session,
                decision_id=item.decision_id,
                task_class=item.task_class,
                model=item.model,
                input_messages=report.input_messages,
                output_text=text,
                meta=None,
                item_id=decision.item_id,
                # A shadow-mode call's sample grades the answer of the model tierwise would
                # have chosen, as the gateway's does (router.models.Sample).
                answer_model=(
                    decision.model if decision.shadow and decision.model != item.model else None
                ),
                status="queued",
                attempts=0,
                decided_at=decision.created_at,
                created_at=now,
            )
        cost: int | None = row["cost_nusd"]
        return cost or 0


def _reply_text(body: dict[str, Any]) -> str | None:
    """The answer a grader sees in a chat completion body (first choice's content, then its
    tool calls), as the gateway reads it."""
    choices = body.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        return None
    return answer_text(message.get("content"), message.get("tool_calls"))
