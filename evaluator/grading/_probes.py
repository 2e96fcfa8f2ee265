"""Shadow probes: which samples of an escalated class are graded on the next cheaper model's
answer (the only evidence the way back reads)."""

from __future__ import annotations

from router.models import RoutingEntry, Sample
from router.policy import Policy
from router.sampling import sample_point

SHADOW_SALT = ":shadow"
"""Salt of the hash that splits an escalated class's samples on a non-reference model."""

SHADOW_FRACTION = 0.5
"""Share of an escalated class's samples on a non-reference model graded as shadow probes."""

SHADOW_MAX_TOKENS = 2048
"""Output cap of the cheaper model's answer in a shadow probe (tokens)."""


def shadow_model(policy: Policy, sample: Sample, entry: RoutingEntry | None) -> str | None:
    """The cheaper model whose answer a shadow probe grades for ``sample``, or None (a normal
    grade of the served answer).

    A sample is a shadow sample when its class's routing-table ``entry`` is ``escalated`` on the
    sample's model (read when the grading job runs), the ladder has a cheaper model
    (``policy.previous_model(sample.model)``), and either the sample's model is the class's
    reference model (there is nothing else to compare), or the decision id's salted hash point
    ``sample_point(decision_id + ":shadow")`` is below :data:`SHADOW_FRACTION` (one half,
    deterministic, so a retried grade makes the same choice). The salted point is independent of
    the sampling point (``sample_point(decision_id) < sample_rate``), so the split stays one half
    whatever the class's sample rate was or becomes. With no cheaper model the sample is graded
    normally.
    """
    if entry is None or entry.status != "escalated" or entry.model != sample.model:
        return None
    cheaper = policy.previous_model(sample.model)
    if cheaper is None:
        return None
    if sample.model == policy.reference_model(sample.task_class):
        return cheaper
    if sample_point(sample.decision_id + SHADOW_SALT) < SHADOW_FRACTION:
        return cheaper
    return None
