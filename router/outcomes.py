"""Outcome intake: what callers report after calling the model, priced and stored, and the
text of sampled decisions queued for grading.

Idempotent on decision id (the first report stands; a sampled decision whose first report came
without its text may still get it), all or nothing per request. A decision still in the batch
writer's buffer (decided moments ago in this process) is written with the outcome, in the same
transaction, instead of waiting for the writer's next flush.

While the database is unreachable, :func:`spool_outcomes` turns reports for decisions this
process remembers into rows for the batch writer's spool; any other report is refused (503).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from router import repository
from router.db import utcnow
from router.errors import NotFound, Unavailable
from router.models import Decision, Outcome, Sample
from router.money import usd
from router.pricing import Usage, cost_nusd, normalize_usage
from router.redaction import stored_text
from router.table import RoutingSnapshot


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """A validated outcome, as the API hands it to the service. ``latency_ms`` in ms;
    ``usage`` provider-native (OpenAI or Anthropic shape)."""

    decision_id: str
    served_model: str
    status: str
    latency_ms: float | None
    usage: dict[str, Any] | None
    input_messages: list[dict[str, Any]] | None
    output_text: str | None


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    """What happened to one report: stored (False for a duplicate), its cost in nano-USD (None =
    unpriced or a duplicate), whether its text was queued for grading, and a note why not."""

    decision_id: str
    stored: bool
    cost_nusd: int | None
    sample_queued: bool
    note: str | None

    @property
    def cost_usd(self) -> float | None:
        """The cost in USD, for the API (None = unpriced or a duplicate)."""
        return usd(self.cost_nusd)


def outcome_values(
    snapshot: RoutingSnapshot,
    task_class: str,
    report: OutcomeReport,
    usage: Usage,
    now: datetime,
    decided_at: datetime,
) -> dict[str, Any]:
    """The ``outcome`` row of ``report`` (its ``served_model`` already the catalog name),
    priced at the served model's price in effect at ``decided_at``, the decision's time
    (:meth:`router.table.RoutingSnapshot.price_at`): ``cost_nusd`` (nano-USD) None when the
    model has no price then or no usage was reported, never 0 (:func:`router.pricing.cost_nusd`).
    Cost and quality go to the served model, which may differ from the routed one
    (``decision.model``, kept there)."""
    price = snapshot.price_at(report.served_model, decided_at)
    return {
        "decision_id": report.decision_id,
        "task_class": task_class,
        "served_model": report.served_model,
        "status": report.status,
        "latency_ms": report.latency_ms,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_nusd": None if report.usage is None else cost_nusd(usage, price),
        "usage_raw": report.usage,
        "decided_at": decided_at,
        "created_at": now,
    }


NO_TEXT_NOTE = "sampled, but the class keeps no text (text_retention_days = 0): not graded"


def _gradable(decision: Decision, report: OutcomeReport) -> bool:
    """A sampled decision's outcome that can be graded: status ok, with messages and text."""
    return (
        decision.sampled
        and report.status == "ok"
        and report.output_text is not None
        and bool(report.input_messages)
    )


async def record_outcomes(
    session: AsyncSession,
    snapshot: RoutingSnapshot,
    reports: Sequence[OutcomeReport],
    *,
    buffered: Callable[[set[str]], dict[str, dict[str, Any]]],
    labels: Sequence[str] | None = None,
) -> list[OutcomeResult]:
    """Store outcome reports priced from ``snapshot``'s catalog and queue sampled text.
    Flushes; the caller commits. ``buffered(ids)`` gives the decision rows among ``ids`` the
    batch writer has not committed yet, by id. ``labels`` name each report in errors (default
    ``[i]``; ``""`` for a single report: ``usage.prompt_tokens``).

    Raises:
        NotFound: a decision id is unknown (404, field ``[i].decision_id``).
        InvalidInput: a usage count is not a whole number >= 0 (422).
    """
    labels = labels or [f"[{i}]" for i in range(len(reports))]

    def where(i: int, name: str) -> str:
        return f"{labels[i]}.{name}" if labels[i] else name

    # A dated id the provider reported (gpt-4o-mini-2024-07-18) is priced and graded as the
    # catalog model it names.
    reports = [replace(r, served_model=snapshot.canonical(r.served_model)) for r in reports]
    ids = [r.decision_id for r in reports]
    usages = [normalize_usage(r.usage, field=where(i, "usage")) for i, r in enumerate(reports)]
    # The writer's rows first, then the database: a row the writer commits in between is in
    # one or the other, never in neither.
    waiting = buffered(set(ids))
    decisions = {i: Decision.model_validate(row) for i, row in waiting.items()}
    decisions |= await repository.decisions_by_id(session, [i for i in ids if i not in waiting])
    for i, report in enumerate(reports):
        if report.decision_id not in decisions:
            raise NotFound(
                f"unknown decision_id '{report.decision_id}'", field=where(i, "decision_id")
            )
    await repository.insert_decisions(session, waiting.values())
    done = await repository.with_outcome(session, ids)
    sampled_done = await repository.with_sample(session, ids)
    results: list[OutcomeResult] = []
    now = utcnow()
    seen: set[str] = set()

    async def queue(decision: Decision, report: OutcomeReport) -> bool:
        """Queue the report's text as a sample; False when the class keeps no text."""
        settings = snapshot.policy.settings_for(decision.task_class)
        text = stored_text(
            retention_days=settings.text_retention_days,
            redactor=settings.redactor,
            input_messages=report.input_messages or [],
            output_text=report.output_text or "",
        )
        if text is None:
            return False
        await repository.queue_sample(
            session,
            decision_id=report.decision_id,
            task_class=decision.task_class,
            model=report.served_model,
            input_messages=text[0],
            output_text=text[1],
            meta=decision.meta,
            item_id=decision.item_id,
            status="queued",
            attempts=0,
            decided_at=decision.created_at,
            created_at=now,
        )
        sampled_done.add(report.decision_id)
        return True

    for report, usage in zip(reports, usages, strict=True):
        decision = decisions[report.decision_id]
        if report.decision_id in done or report.decision_id in seen:
            queued = report.decision_id not in sampled_done and _gradable(decision, report)
            if queued:
                queued = await queue(decision, report)
            dup_note = (
                "duplicate: text attached to the earlier report"
                if queued
                else "duplicate: the first report stands"
            )
            results.append(OutcomeResult(report.decision_id, False, None, queued, dup_note))
            continue
        seen.add(report.decision_id)
        values = outcome_values(
            snapshot, decision.task_class, report, usage, now, decision.created_at
        )
        cost = values["cost_nusd"]
        await repository.insert_outcome(session, **values)
        queued = False
        note: str | None = None
        if report.usage is None:
            note = "no usage reported: unpriced"
        elif cost is None:
            note = "unpriced model"
        if decision.sampled:
            if report.status != "ok":
                note = "sampled, but status is not ok: not graded"
            elif not _gradable(decision, report):
                note = (
                    "sampled, but input_messages/output_text missing: not graded yet "
                    "(send them again with the same decision_id)"
                )
            elif await queue(decision, report):
                queued = True
            else:
                note = NO_TEXT_NOTE
        results.append(OutcomeResult(report.decision_id, True, cost, queued, note))
    await session.flush()
    return results


@dataclass(frozen=True, slots=True)
class KnownDecision:
    """What outcome intake needs of a decision this process made, kept in memory so its
    outcome can be spooled while the database is unreachable (:func:`spool_outcomes`)."""

    task_class: str
    sampled: bool
    created_at: datetime
    item_id: str | None
    meta: dict[str, Any] | None


SPOOLED_NOTE = (
    "spooled: the database is unreachable; stored once it is back (a report for a decision "
    "that already has one is dropped then: the first report stands)"
)


def spool_outcomes(
    snapshot: RoutingSnapshot,
    reports: Sequence[OutcomeReport],
    known: Callable[[str], KnownDecision | None],
    *,
    labels: Sequence[str] | None = None,
    retry_after_s: int = 5,
) -> tuple[list[tuple[type[SQLModel], dict[str, Any]]], list[OutcomeResult]]:
    """The ``outcome`` (and, for a gradable sampled report, ``sample``) rows of ``reports``,
    priced as :func:`record_outcomes` prices them, for the batch writer to spool while the
    database is unreachable; and what to answer. ``known(id)`` gives a decision this process
    remembers (None: not known here). All or nothing: nothing is returned for a request with a
    decision that is not known here, since only the database could say whether it exists.

    Raises:
        Unavailable: a decision id is not known to this process (503 with ``Retry-After``,
            field ``[i].decision_id``).
        InvalidInput: a usage count is not a whole number >= 0 (422).
    """
    labels = labels or [f"[{i}]" for i in range(len(reports))]

    def where(i: int, name: str) -> str:
        return f"{labels[i]}.{name}" if labels[i] else name

    reports = [replace(r, served_model=snapshot.canonical(r.served_model)) for r in reports]
    usages = [normalize_usage(r.usage, field=where(i, "usage")) for i, r in enumerate(reports)]
    decisions: dict[str, KnownDecision] = {}
    for i, report in enumerate(reports):
        decision = known(report.decision_id)
        if decision is None:
            raise Unavailable(
                f"the database is unreachable and decision_id '{report.decision_id}' was not "
                "made by this process recently, so it cannot be checked now; retry later",
                field=where(i, "decision_id"),
                retry_after_s=retry_after_s,
            )
        decisions[report.decision_id] = decision
    now = utcnow()
    rows: list[tuple[type[SQLModel], dict[str, Any]]] = []
    results: list[OutcomeResult] = []
    seen: set[str] = set()
    for report, usage in zip(reports, usages, strict=True):
        decision = decisions[report.decision_id]
        if report.decision_id in seen:
            results.append(
                OutcomeResult(
                    report.decision_id, False, None, False, "duplicate: the first report stands"
                )
            )
            continue
        seen.add(report.decision_id)
        values = outcome_values(
            snapshot, decision.task_class, report, usage, now, decision.created_at
        )
        rows.append((Outcome, values))
        queued = (
            decision.sampled
            and report.status == "ok"
            and report.output_text is not None
            and bool(report.input_messages)
        )
        if queued:
            rows.append(
                (
                    Sample,
                    {
                        "decision_id": report.decision_id,
                        "task_class": decision.task_class,
                        "model": report.served_model,
                        "input_messages": report.input_messages,
                        "output_text": report.output_text,
                        "meta": decision.meta,
                        "item_id": decision.item_id,
                        "status": "queued",
                        "attempts": 0,
                        "decided_at": decision.created_at,
                        "created_at": now,
                    },
                )
            )
        results.append(
            OutcomeResult(report.decision_id, True, values["cost_nusd"], queued, SPOOLED_NOTE)
        )
    return rows, results
