"""The evidence behind an escalation event: the graded samples its rule counted, with their
text (the input, the graded answer, the reference's answer or the judge's explanation and
score, the verdict), paged.

Which samples: the grades of the event's class on the model it moved away from
(``from_model``), for samples decided in the event's window (at or after ``window_start``)
and graded before the event was recorded (``grade.created_at <= event.created_at``): the
verdicts its k/n counted. An event that brought an escalated class back down to the cheaper
model its shadow probes measured (``evidence.shadow.model == to_model``) also lists those
shadow probes (``shadow`` true). A shadow probe's cheaper answer is not stored (only its
grade), so its ``answer`` is None.

Paging: by grade id, ascending; ``cursor`` is the last id of the previous page (an opaque
string to callers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.models import EscalationEvent, Grade
from router.errors import InvalidInput, NotFound
from router.models import Sample

VERDICTS = ("agree", "disagree", "invalid", "refused")
MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class EvidenceSample:
    """One graded sample behind an event. ``answer`` is the graded answer (the cheap model's);
    ``judge_output`` the grader's raw output (the reference model's own answer, or the judge's
    explanation with its verdict or rating); ``score`` the judge's rating or pairwise credit.
    ``input_messages``, ``answer`` and ``judge_output`` are None when the text is withheld."""

    grade_id: int
    decision_id: str
    model: str
    reference_model: str
    grader: str
    shadow: bool
    verdict: str
    score: float | None
    parse_status: str
    decided_at: datetime
    graded_at: datetime
    input_messages: list[dict[str, Any]] | None
    answer: str | None
    judge_output: str | None


@dataclass(frozen=True, slots=True)
class Evidence:
    """An event, the verdict counts of all its samples (every page), one page of samples, the
    cursor of the next page (None: last page), and whether the text is included."""

    event: EscalationEvent
    counts: dict[str, int]
    samples: list[EvidenceSample]
    next_cursor: str | None
    text_included: bool


def _scope(event: EscalationEvent) -> sa.ColumnElement[bool]:
    """The grades an event counted (module doc)."""
    own = sa.and_(col(Grade.model) == event.from_model, col(Grade.shadow).is_(sa.false()))
    shadow_model = ((event.evidence or {}).get("shadow") or {}).get("model")
    parts = [own]
    if shadow_model is not None and shadow_model == event.to_model:
        parts.append(sa.and_(col(Grade.model) == shadow_model, col(Grade.shadow).is_(sa.true())))
    return sa.and_(
        col(Grade.task_class) == event.task_class,
        col(Grade.decided_at) >= event.window_start,
        col(Grade.created_at) <= event.created_at,
        sa.or_(*parts),
    )


def _cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidInput("cursor: not a cursor this endpoint gave", field="cursor")
    return int(cursor)


async def escalation_evidence(
    session: AsyncSession,
    event_id: int,
    *,
    limit: int = 50,
    cursor: str | None = None,
    verdict: str | None = None,
    with_text: bool = True,
) -> Evidence:
    """The samples behind escalation event ``event_id`` (module doc): ``limit`` (1-200) a page
    after ``cursor``, only ``verdict`` ones when set; without ``with_text`` the input, answer
    and judge output are withheld.

    Raises:
        NotFound: no event ``event_id`` (``field="event_id"``).
        InvalidInput: ``limit`` out of range, a ``cursor`` not given by this function, or an
            unknown ``verdict`` (``field`` names it).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be 1 to {MAX_LIMIT}", field="limit")
    if verdict is not None and verdict not in VERDICTS:
        raise InvalidInput(f"verdict: one of {', '.join(VERDICTS)}", field="verdict")
    after = _cursor(cursor)
    event = await session.get(EscalationEvent, event_id)
    if event is None:
        raise NotFound(f"escalation event {event_id} does not exist", field="event_id")
    scope = _scope(event)
    counted = await session.exec(
        select(Grade.verdict, func.count()).where(scope).group_by(col(Grade.verdict))
    )
    counts = {v: 0 for v in VERDICTS} | {v: int(n) for v, n in counted.all()}
    stmt = (
        select(Grade, Sample)
        .join(Sample, col(Sample.decision_id) == col(Grade.decision_id))
        .where(scope, col(Grade.id) > after)
        .order_by(col(Grade.id))
        .limit(limit + 1)
    )
    if verdict is not None:
        stmt = stmt.where(col(Grade.verdict) == verdict)
    rows = list((await session.exec(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    samples = [
        EvidenceSample(
            grade_id=int(g.id or 0),
            decision_id=g.decision_id,
            model=g.model,
            reference_model=g.reference_model,
            grader=g.grader,
            shadow=g.shadow,
            verdict=g.verdict,
            score=g.score,
            parse_status=g.parse_status,
            decided_at=g.decided_at,
            graded_at=g.created_at,
            input_messages=list(s.input_messages) if with_text else None,
            answer=(None if g.shadow else s.output_text) if with_text else None,
            judge_output=g.raw_output if with_text else None,
        )
        for g, s in rows
    ]
    return Evidence(
        event=event,
        counts=counts,
        samples=samples,
        next_cursor=str(samples[-1].grade_id) if more and samples else None,
        text_included=with_text,
    )


def evidence_json(ev: Evidence) -> dict[str, Any]:
    """``ev`` as JSON-able data: the event's fields, ``counts``, ``text_included``,
    ``samples`` and ``next_cursor`` (the shape of ``GET /v1/escalations/{id}``; times as
    datetimes, for the caller's encoder)."""
    event = {c: getattr(ev.event, c) for c in EscalationEvent.model_fields}
    return {
        "event": event,
        "counts": ev.counts,
        "text_included": ev.text_included,
        "samples": [{f: getattr(s, f) for f in EvidenceSample.__slots__} for s in ev.samples],
        "next_cursor": ev.next_cursor,
    }
