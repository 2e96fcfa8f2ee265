"""Which task classes are graded in real time and which through the providers' batch APIs
(the ``grading`` class setting, :class:`router.policy.ClassSettings`)."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.models import Sample
from router.policy import Policy


def uses_batch(policy: Policy) -> bool:
    """True when any class may be batch-graded: the defaults say ``batch`` or an override sets
    ``grading``. False for a policy that never mentions it, so the real-time job then runs the
    very query it always ran."""
    if policy.spec.defaults.grading == "batch":
        return True
    return any(o.overrides.get("grading") == "batch" for o in policy.spec.classes)


async def batch_classes(session: AsyncSession, policy: Policy) -> list[str]:
    """The task classes with waiting samples (queued or claimed) whose ``grading`` is
    ``batch``, sorted; empty without a query when the policy has no batch classes."""
    if not uses_batch(policy):
        return []
    waiting = select(Sample.task_class).where(col(Sample.status).in_(("queued", "claimed")))
    names = (await session.exec(waiting.distinct())).all()
    return sorted(n for n in names if policy.settings_for(n).grading == "batch")
