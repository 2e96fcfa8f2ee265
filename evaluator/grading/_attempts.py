"""A grade without a verdict is retried once; the final grade books both attempts' spend. The
state lives in the sample's own ``earlier_*`` columns, never in caller data."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import GradeResult
from evaluator.models import Grade
from router.db import utcnow
from router.dialect import insert_ignore
from router.models import Sample
from router.policy import Policy

NO_VERDICT = ("invalid", "refused")
"""Verdicts that are no verdict: the first such grade of a sample is retried once."""


def requeue_without_verdict(row: Sample, result: GradeResult, cost: int | None) -> bool:
    """Requeue ``row`` for its one retry if ``result`` has no verdict and no earlier attempt
    had one either (the spend of this attempt goes to ``row.earlier_*``, the job's own
    columns). True when requeued."""
    if result.verdict not in NO_VERDICT or row.earlier_verdict is not None:
        return False
    row.earlier_verdict = result.verdict
    row.earlier_input_tokens = result.usage.total_input_tokens
    row.earlier_output_tokens = result.usage.output_tokens
    row.earlier_cost_nusd = cost
    row.status, row.lease_until = "queued", None
    return True


def spend(row: Sample, result: GradeResult, cost: int | None) -> tuple[int, int, int | None]:
    """(input tokens, output tokens, nano-USD) of the final grade: this attempt plus an earlier
    one that had no verdict; the cost is None (unpriced) if either attempt's is."""
    tokens_in, tokens_out = result.usage.total_input_tokens, result.usage.output_tokens
    if row.earlier_verdict is None:
        return tokens_in, tokens_out, cost
    earlier = row.earlier_cost_nusd
    total = None if cost is None or earlier is None else cost + earlier
    return tokens_in + row.earlier_input_tokens, tokens_out + row.earlier_output_tokens, total


async def write_grade(
    session: AsyncSession,
    policy: Policy,
    row: Sample,
    result: GradeResult,
    cost: int | None,
    *,
    answer_of: str | None = None,
) -> None:
    """Book ``row``'s final grade and mark the sample ``graded`` (the caller commits). Tokens
    and nano-USD are this attempt's plus an earlier one without a verdict (:func:`spend`).
    ``answer_of`` is the model whose answer was graded when it is not the served one: a
    shadow probe's cheaper model (stored with ``shadow`` true, out of the class's evidence) or
    a shadow-mode call's routed model (``row.answer_model``: the class's own evidence, as if it
    had been served). The grade is inserted once (a duplicate keeps the first)."""
    tokens_in, tokens_out, total = spend(row, result, cost)
    await session.exec(
        insert_ignore(session, Grade).values(
            decision_id=row.decision_id,
            task_class=row.task_class,
            model=answer_of or row.model,
            shadow=answer_of is not None and row.answer_model is None,
            reference_model=policy.reference_model(row.task_class),
            grader=policy.settings_for(row.task_class).grader,
            verdict=result.verdict,
            score=result.score,
            parse_status=result.parse_status,
            # The judge may quote the sample: the class's redaction applies to its text too.
            raw_output=policy.settings_for(row.task_class).redactor.text(result.raw_output),
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_nusd=total,
            decided_at=row.decided_at,
            created_at=utcnow(),
        )
    )
    row.status, row.lease_until = "graded", None
