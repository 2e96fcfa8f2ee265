"""A grade without a verdict is retried once; the final grade books both attempts' spend. The
state lives in the sample's own ``earlier_*`` columns, never in caller data."""

from __future__ import annotations

from evaluator.graders import GradeResult
from router.models import Sample

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
